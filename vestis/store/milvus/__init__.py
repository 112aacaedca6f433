"""A collection on Milvus (a server or cluster, or Milvus Lite in a file), through pymilvus's MilvusClient.

It offers what the rest of vestis uses on a local :class:`~vestis.store.collection.Collection`
(items, change stamps for incremental indexing, metadata filters, search by vector, colour and
attribute vectors, settings), so ``vestis index``, ``search``, ``remove``, ``eval`` and ``serve``
work on it unchanged. By job:

- :mod:`.connection`: the pymilvus client, its errors in words, what the server can do;
- :mod:`.layout`: the Milvus collections of a vestis collection, its settings, index specs;
- :mod:`.expressions`: metadata filters as Milvus boolean expressions, values escaped;
- :mod:`.collection`: items, their vectors, search and writes;
- :mod:`.item_vectors`: per-item vectors (attribute vectors), searched in Milvus.
"""

from vestis.store.milvus.collection import MilvusCollection
from vestis.store.milvus.expressions import filter_expression, literal
from vestis.store.milvus.item_vectors import MilvusAttributes, MilvusItemVectors
from vestis.store.milvus.layout import parse_index_spec

__all__ = ["MilvusAttributes", "MilvusCollection", "MilvusItemVectors", "filter_expression", "literal",
           "parse_index_spec"]

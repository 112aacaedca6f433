"""Open or create a collection by its location: a directory (the local store) or Milvus.

The location decides the backend (see :mod:`vestis.store.location`); both follow
:class:`vestis.store.protocol.CollectionStore`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vestis.store.collection import Collection
from vestis.store.location import parse_location
from vestis.store.protocol import CollectionStore


def collection_exists(location: str | Path) -> bool:
    where = parse_location(location)
    if where.is_milvus:
        from vestis.store.milvus import MilvusCollection

        return MilvusCollection.exists(where)
    return Collection.exists(Path(location))


def open_collection(location: str | Path) -> CollectionStore:
    """The collection at ``location``: a :class:`Collection` or a :class:`MilvusCollection`."""
    where = parse_location(location)
    if where.is_milvus:
        from vestis.store.milvus import MilvusCollection

        return MilvusCollection.open(where)
    return Collection.open(Path(location))


def create_collection(location: str | Path, **settings: Any) -> CollectionStore:
    """A new, empty collection at ``location`` (settings as for :meth:`Collection.create`)."""
    where = parse_location(location)
    if where.is_milvus:
        from vestis.store.milvus import MilvusCollection

        return MilvusCollection.create(where, **settings)
    return Collection.create(Path(location), **settings)

"""Open or create a collection by its location: a directory (the local store) or Milvus.

The location decides the backend (see :mod:`vestis.store.location`); everything above the store
layer calls these three functions and never asks which store it got.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vestis.store.collection import Collection
from vestis.store.location import parse_location


def collection_exists(location: str | Path) -> bool:
    where = parse_location(location)
    if where.is_milvus:
        from vestis.store.milvus import MilvusCollection

        return MilvusCollection.exists(where)
    return Collection.exists(Path(location))


def open_collection(location: str | Path) -> Any:
    """The collection at ``location``: a :class:`Collection` or a :class:`MilvusCollection`."""
    where = parse_location(location)
    if where.is_milvus:
        from vestis.store.milvus import MilvusCollection

        return MilvusCollection.open(where)
    return Collection.open(Path(location))


def create_collection(location: str | Path, **settings: Any) -> Any:
    """A new, empty collection at ``location`` (settings as for :meth:`Collection.create`)."""
    where = parse_location(location)
    if where.is_milvus:
        from vestis.store.milvus import MilvusCollection

        return MilvusCollection.create(where, **settings)
    return Collection.create(Path(location), **settings)

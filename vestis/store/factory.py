"""Open or create a collection by its location: a directory (the local store) or Milvus.

The location decides the backend (see :mod:`vestis.store.location`); both follow
:class:`vestis.store.protocol.CollectionStore`. The stores of a collection's per-item vectors
(attribute, joint text-image) are opened here too: this is the one module that knows which
concrete store it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vestis.encoders.attribute_encoder import AttributeEncoder
from vestis.encoders.joint import JointModel
from vestis.errors import VestisError
from vestis.store.attribute_index import AttributeIndex
from vestis.store.collection import Collection
from vestis.store.joint_index import JointIndex
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


class UnsupportedByStoreError(VestisError):
    """What a collection's store cannot keep (joint text-image vectors in Milvus)."""


def open_attributes(collection: CollectionStore) -> Any:
    """The collection's attribute vectors, or None when it has no attribute model."""
    if isinstance(collection, Collection):
        return AttributeIndex.open(collection)
    return collection.open_attributes()


def configure_attributes(collection: CollectionStore, model: AttributeEncoder, *, rebuild: bool = False) -> Any:
    """The attribute vectors for ``model`` (see :meth:`AttributeIndex.configure`)."""
    if isinstance(collection, Collection):
        return AttributeIndex.configure(collection, model, rebuild=rebuild)
    return collection.configure_attributes(model, rebuild=rebuild)


def open_joint(collection: CollectionStore) -> JointIndex | None:
    """The collection's joint text-image vectors, or None when it has no joint model (a Milvus
    collection keeps none: search in words is keyword search there)."""
    return JointIndex.open(collection) if isinstance(collection, Collection) else None


def configure_joint(collection: CollectionStore, model: JointModel, *, rebuild: bool = False) -> JointIndex:
    """The joint vectors for ``model`` (see :meth:`JointIndex.configure`)."""
    if not isinstance(collection, Collection):
        raise UnsupportedByStoreError(f"{collection.location} is kept in Milvus, which keeps no joint text-image "
                                      "vectors yet: search it in words with --mode keyword, or use a local collection")
    return JointIndex.configure(collection, model, rebuild=rebuild)

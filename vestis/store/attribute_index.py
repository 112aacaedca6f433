"""Per-attribute vectors of a collection: one L2-normalised vector per (item, attribute).

An attribute model (:class:`~vestis.encoders.attribute_encoder.AttributeEncoder`) embeds every
item once per attribute, items without a label for it included (the model needs the attribute,
not the item's value). The vectors are a store of per-item vectors
(:class:`~vestis.store.item_vectors.ItemVectors`, whose docstring gives the storage rules)::

    item_attr_vectors(vid, attribute, vector BLOB, agen)   one row per (item, attribute)
    settings: attribute_model, attribute_model_version, attribute_names, attribute_dim,
              attribute_generation
    attribute_model/model.onnx + model.json                the collection's copy of the model

Items added later (``vestis index``, ``POST /items``) have no attribute vectors until
:func:`vestis.store.vector_builds.build_attribute_index` (``vestis attributes build``, run by ``vestis index`` too when the
collection has an attribute model) embeds the items that lack them. Search is exact: per
attribute a matrix-vector product over the items (a few milliseconds for 44k items).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np

from vestis.encoders.attribute_encoder import AttributeEncoder
from vestis.encoders.onnx_encoder import OnnxEncoder
from vestis.index.topk import top_k
from vestis.store.atomic import atomic_write
from vestis.store.collection import Collection
from vestis.store.item_vectors import ItemVectors

CACHE = "attributes.npz"
MODEL_DIR, MODEL_FILE = "attribute_model", "model.onnx"  # the collection's copy of its attribute model


def attribute_scores(vectors: np.ndarray, dim: int, queries: np.ndarray) -> np.ndarray:
    """Every row's sum of per-attribute inner products: ``vectors`` holds each item's attribute
    vectors side by side (N x attributes*dim), ``queries`` the weighted query vector of each
    attribute (attributes x dim). The columns of an attribute whose query is zero are not read."""
    scores = np.zeros(len(vectors), np.float32)
    for a, query in enumerate(queries):
        if query.any():
            scores += vectors[:, a * dim:(a + 1) * dim] @ query
    return scores


class AttributeIndex(ItemVectors):
    """The attribute vectors of one collection (see the module docstring). Thread-safe."""

    KIND, TABLE, SLOT, GENERATION, CACHE = "attribute", "item_attr_vectors", "attribute", "agen", CACHE
    REBUILD_HINT = "vestis attributes build --rebuild"

    @classmethod
    def open(cls, collection: Collection) -> Self | None:
        """The local collection's attribute index, or None when it has no attribute model (any
        store's: :func:`vestis.store.factory.open_attributes`)."""
        return super().open(collection)

    @classmethod
    def configure(cls, collection: Collection, model: AttributeEncoder, *, rebuild: bool = False) -> Self:
        """The attribute index for ``model``, created when the collection has none. A collection
        indexed with another model is refused unless ``rebuild`` (its vectors are then dropped)."""
        collection.check_encoder(model.backbone.version)
        return cls._configure(collection, version=model.version, names=list(model.attributes), dim=model.dim,
                              install=lambda: install_model(model.path, collection.path),
                              model_name=model.path.name, rebuild=rebuild)

    def search_weighted(self, query: np.ndarray, want: int, *, filters: dict[str, Sequence[str]] | None = None,
                        exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, int]:
        """The ``want`` best items by inner product with ``query``: each attribute's weighted query
        vector side by side (zeros for the attributes not asked, whose columns are not read), then
        the weighted colour descriptor, scored against the collection's colour descriptors. The
        same query a Milvus collection answers on its server. Returns (vids, scores, eligible)."""
        query = np.asarray(query, np.float32)
        width = len(self.names) * self.dim
        with self.lock:  # a catch-up by another thread must not move rows while they are scored
            vids, vectors, _ = self.table().view
            scores = attribute_scores(vectors, self.dim, query[:width].reshape(len(self.names), self.dim))
            vids = vids.copy()
            colour = query[width:]
            if colour.any():
                table = self.collection.table()
                rows = table.rows_of(vids)
                vids, scores, rows = vids[rows >= 0], scores[rows >= 0], rows[rows >= 0]
                scores = scores + table.extra[rows] @ colour
        if filters:
            keep = np.isin(vids, self.collection.filter_vids(filters))
            vids, scores = vids[keep], scores[keep]
        if len(exclude):
            keep = ~np.isin(vids, np.asarray(exclude, np.int64))
            vids, scores = vids[keep], scores[keep]
        order = top_k(scores, want)
        return vids[order], scores[order], len(vids)

    @property
    def attributes(self) -> list[str]:
        return self.names

    def check_model(self, model: AttributeEncoder) -> None:
        """Refuse query vectors from another attribute model than the one that embedded the items."""
        self.check_version(model.version)

    def load_model(self, threads: int | None = None, backbone: OnnxEncoder | None = None) -> AttributeEncoder:
        """The collection's copy of its attribute model (checked to be the very same file);
        ``backbone`` is shared when it is the model's backbone."""
        model = AttributeEncoder(self.collection.path / self.model_path, threads=threads, backbone=backbone)
        self.check_model(model)
        return model

    def info(self) -> dict[str, object]:
        return {
            "attribute_model": self.model_path,
            "attribute_model_version": self.model_version,
            "attributes": self.attributes,
            "dim": self.dim,
            "items_embedded": self.embedded(),
            "items": len(self.collection),
        }


def install_model(model_path: Path, collection_path: Path) -> str:
    """Copy the model and its sidecar into the collection (so it moves with it); returns the path
    relative to the collection."""
    target = collection_path / MODEL_DIR
    target.mkdir(exist_ok=True)
    for source in (Path(model_path), Path(model_path).with_suffix(".json")):
        name = MODEL_FILE if source.suffix == ".onnx" else MODEL_FILE.replace(".onnx", ".json")
        if source.resolve() != (target / name).resolve():
            atomic_write(target / name, lambda tmp, src=source: shutil.copyfile(src, tmp))
    return f"{MODEL_DIR}/{MODEL_FILE}"

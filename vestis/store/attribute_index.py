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
:func:`build_attribute_index` (``vestis attributes build``, run by ``vestis index`` too when the
collection has an attribute model) embeds the items that lack them. Search is exact: per
attribute a matrix-vector product over the items (a few milliseconds for 44k items).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np

from vestis.encoders.attribute_encoder import AttributeEncoder
from vestis.encoders.onnx_encoder import EMBEDDING, OnnxEncoder
from vestis.store.atomic import atomic_write
from vestis.store.collection import Collection
from vestis.store.item_vectors import ItemVectors

CACHE = "attributes.npz"
MODEL_DIR, MODEL_FILE = "attribute_model", "model.onnx"  # the collection's copy of its attribute model


class AttributeIndex(ItemVectors):
    """The attribute vectors of one collection (see the module docstring). Thread-safe."""

    KIND, TABLE, SLOT, GENERATION, CACHE = "attribute", "item_attr_vectors", "attribute", "agen", CACHE
    REBUILD_HINT = "vestis attributes build --rebuild"

    @classmethod
    def open(cls, collection: Collection) -> Self | None:
        """The collection's attribute index, or None when it has no attribute model (a store that
        keeps attribute vectors itself, Milvus, answers with its own)."""
        if hasattr(collection, "open_attributes"):
            return collection.open_attributes()
        return super().open(collection)

    @classmethod
    def configure(cls, collection: Collection, model: AttributeEncoder, *, rebuild: bool = False) -> Self:
        """The attribute index for ``model``, created when the collection has none. A collection
        indexed with another model is refused unless ``rebuild`` (its vectors are then dropped)."""
        if hasattr(collection, "configure_attributes"):
            return collection.configure_attributes(model, rebuild=rebuild)
        collection.check_encoder(model.backbone.version)
        return cls._configure(collection, version=model.version, names=list(model.attributes), dim=model.dim,
                              install=lambda: install_model(model.path, collection.path),
                              model_name=model.path.name, rebuild=rebuild)

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


@dataclass
class BuildReport:
    embedded: int = 0
    from_cache: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "embedded": self.embedded,
            "from_feature_cache": self.from_cache,
            "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
            "seconds": round(self.seconds, 3),
        }


def _batches(rows: list, size: int) -> Iterator[list]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def build_attribute_index(
    collection: Collection,
    model: AttributeEncoder,
    *,
    rebuild: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> BuildReport:
    """Embed every item of ``collection`` that has no attribute vectors yet, for every attribute.

    Backbone features already in the collection's feature cache (``<collection>/features``, made
    when a model was trained on this collection) are reused; the other images are read, decoded
    and run through the backbone. Each batch is committed on its own: an interrupted build keeps
    its work and a second run finishes it."""
    from vestis.data.sources import read_source
    from vestis.encoders.pipeline import embed_items
    from vestis.store.feature_cache import OutputsAsVectors, open_cached, output_shapes

    started = time.perf_counter()
    report = BuildReport()
    index = AttributeIndex.configure(collection, model, rebuild=rebuild)
    todo = index.missing()
    cache = open_cached(collection.path / "features", model.backbone, [model.feature_map, EMBEDDING])
    cached = [(vid, item_id) for vid, item_id, _s, h in todo if cache.key.get(item_id) == h]
    for chunk in _batches(cached, 256):
        rows = cache.rows([item_id for _vid, item_id in chunk])
        order = np.argsort(rows)
        features = {
            n: np.asarray(cache.arrays[n][rows[order]], np.float32) for n in model.backbone_outputs
        }
        vectors = model.embed_features(features)
        index.add(np.array([chunk[i][0] for i in order], np.int64), vectors)
        report.from_cache += len(chunk)
    done = {vid for vid, _i in cached}
    rest = [(vid, source) for vid, _i, source, _h in todo if vid not in done]
    if rest:
        adapter = OutputsAsVectors(
            model.backbone, model.backbone_outputs, output_shapes(model.backbone, model.backbone_outputs)
        )
        ids = {vid: item_id for vid, item_id, _s, _h in todo}
        stream = embed_items(
            adapter,
            ((vid, lambda s=source: read_source(s)) for vid, source in rest),
            batch_size=batch_size,
            with_colour=False,
            progress=progress,
            total=len(rest),
        )
        for batch in stream:
            if batch.keys:
                index.add(
                    np.array(batch.keys, np.int64), model.embed_features(adapter.split(batch.vectors))
                )
            report.skipped += [(ids[vid], reason) for vid, reason in batch.failures]
            report.embedded += len(batch.keys)
    report.embedded += report.from_cache
    index.save()
    report.seconds = time.perf_counter() - started
    return report


def update_attributes(
    collection: Collection, model_path: Path | None = None, *, progress: bool = True
) -> BuildReport | None:
    """After items were added: embed the new ones with ``model_path`` (which becomes the
    collection's attribute model), else with the collection's attribute model; None when there is
    neither (the collection has no attribute search)."""
    if model_path is None:
        index = AttributeIndex.open(collection)
        if index is None:
            return None
        model = index.load_model()
    else:
        model = AttributeEncoder(model_path)
    return build_attribute_index(collection, model, progress=progress)

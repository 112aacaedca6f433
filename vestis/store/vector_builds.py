"""Building a collection's per-item vectors, on any store: the attribute vectors of an attribute
model (``vestis attributes build``) and the joint text-image vectors of a joint model (``vestis
text build``), for the items that lack them; ``vestis index`` and the API run the updates after
every write. The stores of those vectors are opened through :mod:`vestis.store.factory`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vestis.encoders.attribute_encoder import AttributeEncoder
from vestis.encoders.joint import JointModel
from vestis.encoders.onnx_encoder import EMBEDDING
from vestis.store.factory import configure_attributes, configure_joint, open_attributes, open_joint
from vestis.store.protocol import CollectionStore

CHUNK = 4096  # items projected and committed per transaction


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


@dataclass
class JointBuildReport:
    embedded: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"embedded": self.embedded, "seconds": round(self.seconds, 3)}


def build_attribute_index(
    collection: CollectionStore,
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
    index = configure_attributes(collection, model, rebuild=rebuild)
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
    collection: CollectionStore, model_path: Path | None = None, *, progress: bool = True
) -> BuildReport | None:
    """After items were added: embed the new ones with ``model_path`` (which becomes the
    collection's attribute model), else with the collection's attribute model; None when there is
    neither (the collection has no attribute search)."""
    if model_path is None:
        index = open_attributes(collection)
        if index is None:
            return None
        model = index.load_model()
    else:
        model = AttributeEncoder(model_path)
    return build_attribute_index(collection, model, progress=progress)


def build_joint_index(collection: CollectionStore, model: JointModel, *, rebuild: bool = False) -> JointBuildReport:
    """Project every item that has no joint vector yet; each chunk is its own transaction, so an
    interrupted build keeps its work."""
    started = time.perf_counter()
    report = JointBuildReport()
    index = configure_joint(collection, model, rebuild=rebuild)
    todo = np.array([vid for vid, *_ in index.missing()], np.int64)
    with collection.lock:
        table = collection.table()
        todo = todo[np.isin(todo, table.view[0])]
        features = table.vectors[table.rows_of(todo)] if len(todo) else np.zeros((0, table.dim), np.float32)
    for start in range(0, len(todo), CHUNK):
        vectors = model.embed_image_features(features[start:start + CHUNK])
        report.embedded += index.add(todo[start:start + CHUNK], vectors[:, None, :])
    index.save()
    report.seconds = time.perf_counter() - started
    return report


def update_joint(collection: CollectionStore, model_path: Path | None = None) -> JointBuildReport | None:
    """After items were added: project the new ones with the joint model at ``model_path`` (which
    becomes the collection's), else with the collection's; None when there is neither."""
    if model_path is None:
        index = open_joint(collection)
        if index is None:
            return None
        model = index.load_model()
    else:
        model = JointModel(model_path)
    return build_joint_index(collection, model)

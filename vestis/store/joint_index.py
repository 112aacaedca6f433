"""Joint text-image vectors of a collection: each item's image vector projected into the joint
space of a :class:`~vestis.encoders.joint.JointModel`, for text queries.

A store of per-item vectors (:class:`~vestis.store.item_vectors.ItemVectors`, whose docstring gives
the storage rules) with one slot::

    item_joint_vectors(vid, space, vector BLOB, jgen)
    settings: joint_model, joint_model_version, joint_names, joint_dim, joint_generation
    joint_model/joint.json + image_head.onnx + text_head.onnx    the collection's copy of the model

The projection runs on the collection's stored image vectors (no image is decoded), so embedding
the items that lack joint vectors takes about a second per 10,000 items; ``vestis index`` does it
after every update when the collection has a joint model, and the items it removes or replaces
lose their joint vectors in the same transaction.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from vestis.encoders.joint import SIDECAR, JointModel
from vestis.store.atomic import atomic_write
from vestis.store.collection import Collection
from vestis.store.item_vectors import ItemVectors

MODEL_DIR = "joint_model"
CHUNK = 4096  # items projected and committed per transaction


class JointIndex(ItemVectors):
    """The joint-space vectors of one collection. Thread-safe."""

    KIND, TABLE, SLOT, GENERATION, CACHE = "joint", "item_joint_vectors", "space", "jgen", "joint.npz"
    REBUILD_HINT = "vestis text build --rebuild"

    @classmethod
    def configure(cls, collection: Collection, model: JointModel, *, rebuild: bool = False) -> Self:
        """The joint index for ``model`` (trained on this collection's image encoder), created when
        the collection has none; another model's vectors are refused unless ``rebuild``."""
        collection.check_encoder(model.image_encoder_version)
        return cls._configure(collection, version=model.version, names=["joint"], dim=model.dim,
                              install=lambda: _install_model(model, collection.path),
                              model_name=str(model.path), rebuild=rebuild)

    def load_model(self, threads: int | None = None) -> JointModel:
        """The collection's copy of its joint model (checked to be the very same files)."""
        model = JointModel(self.collection.path / self.model_path, threads=threads)
        self.check_version(model.version)
        return model

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(vids, N x dim joint vectors) of every embedded item, up to date."""
        vids, vectors, _ = self.table().view
        return vids, vectors

    def info(self) -> dict[str, object]:
        return {"joint_model": self.model_path, "joint_model_version": self.model_version, "dim": self.dim,
                "items_embedded": self.embedded(), "items": len(self.collection)}


def _install_model(model: JointModel, collection_path: Path) -> str:
    """Copy the sidecar and both heads into the collection; returns the sidecar's relative path."""
    target = collection_path / MODEL_DIR
    target.mkdir(exist_ok=True)
    source = model.path.parent
    for name in (model.meta["image_head"], model.meta["text_head"], SIDECAR):
        if (source / name).resolve() != (target / name).resolve():
            atomic_write(target / name, lambda tmp, src=source / name: shutil.copyfile(src, tmp))
    return f"{MODEL_DIR}/{SIDECAR}"


@dataclass
class JointBuildReport:
    embedded: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"embedded": self.embedded, "seconds": round(self.seconds, 3)}


def build_joint_index(collection: Collection, model: JointModel, *, rebuild: bool = False) -> JointBuildReport:
    """Project every item that has no joint vector yet; each chunk is its own transaction, so an
    interrupted build keeps its work."""
    started = time.perf_counter()
    report = JointBuildReport()
    index = JointIndex.configure(collection, model, rebuild=rebuild)
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


def update_joint(collection: Collection, model_path: Path | None = None) -> JointBuildReport | None:
    """After items were added: project the new ones with the joint model at ``model_path`` (which
    becomes the collection's), else with the collection's; None when there is neither."""
    if model_path is None:
        index = JointIndex.open(collection)
        if index is None:
            return None
        model = index.load_model()
    else:
        model = JointModel(model_path)
    return build_joint_index(collection, model)

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

Nearest neighbours in the joint space: an exact scan while it stays within ``EXACT_MAX_BYTES``
(a hybrid text query also runs a keyword search and a label search, so it affords a smaller scan
than an image query), above it the collection's ANN spec (:data:`vestis.index.auto.ANN_SPEC`, the
same as the image vectors'), built on first use, saved as ``cache/joint-ann/`` and kept in step
with the joint vectors (added and removed items).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from vestis.encoders.joint import SIDECAR, JointModel
from vestis.errors import VestisError
from vestis.index import load_index, make_index
from vestis.index.auto import EXACT_SPEC, choose_index
from vestis.index.base import VectorIndex
from vestis.store.atomic import atomic_write, atomic_write_dir
from vestis.store.collection import Collection
from vestis.store.item_vectors import ItemVectors

log = logging.getLogger(__name__)

MODEL_DIR = "joint_model"
EXACT_MAX_BYTES = 16 << 20  # the joint vectors an exact text query may scan (16,384 items at 256-d, 3,276 at 1280-d)
ANN_DIR = "joint-ann"


class JointIndex(ItemVectors):
    """The joint-space vectors of one collection. Thread-safe."""

    KIND, TABLE, SLOT, GENERATION, CACHE = "joint", "item_joint_vectors", "space", "jgen", "joint.npz"
    REBUILD_HINT = "vestis text build --rebuild"

    def __init__(self, collection: Collection) -> None:
        super().__init__(collection)
        self._ann: VectorIndex | None = None
        self._ann_spec = EXACT_SPEC
        self._ann_vids = np.zeros(0, np.int64)  # the vids the ANN index holds

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

    def ann(self) -> VectorIndex | None:
        """The ANN index over the joint vectors, up to date, when there are too many for an exact
        scan (see the module docstring); None when exact search is the choice."""
        with self.lock:
            vids, vectors = self.vectors()
            spec = choose_index(len(vids), self.dim, self._ann_spec, EXACT_MAX_BYTES)
            if spec == EXACT_SPEC:
                self._ann = None
            elif self._ann is None or self._ann_spec != spec:
                self._ann, self._ann_vids = self._load_ann(spec)
            self._ann_spec = spec
            if self._ann is not None and not np.array_equal(self._ann_vids, vids):
                gone = np.setdiff1d(self._ann_vids, vids)
                new = np.isin(vids, self._ann_vids, invert=True)
                if len(gone):
                    self._ann.remove(gone)
                if new.any():
                    self._ann.add(vids[new].copy(), vectors[new].copy())
                self._ann_vids = vids.copy()
            return self._ann

    def _load_ann(self, spec: str) -> tuple[VectorIndex, np.ndarray]:
        """The saved ANN index of this model and spec (caught up by :meth:`ann`), else one built
        from every joint vector and saved."""
        folder = self.collection.path / "cache" / ANN_DIR
        try:
            meta = json.loads((folder / "joint.json").read_text())
            if meta["model_version"] == self.model_version and meta["spec"] == make_index(spec, self.dim).spec:
                return load_index(folder / "index"), np.load(folder / "vids.npy")
        except (OSError, ValueError, KeyError, VestisError):
            pass  # none yet, stale or damaged: built below
        started = time.perf_counter()
        index = make_index(spec, self.dim)
        vids, vectors = self.vectors()
        index.add(vids.copy(), vectors.copy())

        def write(tmp: Path) -> None:  # saving builds the index
            (tmp / "index").mkdir()
            index.save(tmp / "index")
            np.save(tmp / "vids.npy", vids)
            (tmp / "joint.json").write_text(json.dumps({"model_version": self.model_version, "spec": index.spec}))

        try:
            folder.parent.mkdir(exist_ok=True)
            with self.collection.derived_files_lock():
                atomic_write_dir(folder, write)
            log.info("joint ANN index (%s) over %d items built in %.1f s", spec, len(vids),
                     time.perf_counter() - started)
        except OSError as error:  # a read-only collection still searches, from memory
            log.warning("joint ANN index not saved: %s", error)
        return index, vids.copy()

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

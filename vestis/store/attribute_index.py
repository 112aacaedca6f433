"""Per-attribute vectors of a collection: one L2-normalised vector per (item, attribute).

An attribute model (:class:`~vestis.encoders.attribute_encoder.AttributeEncoder`) embeds every
item once per attribute, items without a label for it included (the model needs the attribute,
not the item's value). The vectors live in the collection's SQLite database, beside the items::

    item_attr_vectors(vid, attribute, vector BLOB, agen)   one row per (item, attribute)
    settings: attribute_model, attribute_model_version, attribute_names, attribute_dim,
              attribute_generation
    attribute_model/model.onnx + model.json                the collection's copy of the model

and follow the collection's rules: SQLite is the source of truth, the in-memory table and
``cache/attributes.npz`` are derived. Every write of vectors is one transaction that bumps the
*attribute generation*; a trigger deletes an item's rows in the transaction that deletes the item
(removal, or replacement by ``vestis index``), so no vector outlives its item. An in-memory table
loaded at (collection generation G, attribute generation H) catches up like the collection's
index: it drops the vids the collection removed after G and adds the rows written after H.

Items added later (``vestis index``, ``POST /items``) have no attribute vectors until
:func:`build_attribute_index` (``vestis attributes build``, run by ``vestis index`` too when the
collection has an attribute model) embeds the items that lack them. Search is exact: per
attribute a matrix-vector product over the items (a few milliseconds for 44k items).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vestis.encoders.attribute_encoder import AttributeEncoder
from vestis.encoders.onnx_encoder import EMBEDDING, OnnxEncoder
from vestis.errors import EncoderMismatchError, VestisError
from vestis.store.atomic import atomic_write
from vestis.index.vectors import VectorStore
from vestis.store.collection import Collection

log = logging.getLogger(__name__)

CACHE = "attributes.npz"
MODEL_DIR, MODEL_FILE = "attribute_model", "model.onnx"  # the collection's copy of its attribute model
_SCHEMA = """
CREATE TABLE IF NOT EXISTS item_attr_vectors(
    vid INTEGER NOT NULL,
    attribute TEXT NOT NULL,
    vector BLOB NOT NULL,
    agen INTEGER NOT NULL,
    PRIMARY KEY (vid, attribute)
);
CREATE INDEX IF NOT EXISTS item_attr_vectors_agen ON item_attr_vectors(agen);
CREATE TRIGGER IF NOT EXISTS item_attr_vectors_forget AFTER DELETE ON items
BEGIN DELETE FROM item_attr_vectors WHERE vid = OLD.vid; END;
"""


class AttributeIndex:
    """The attribute vectors of one collection (see the module docstring). Thread-safe."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.db = collection.db  # the collection's connection and lock
        self._table: VectorStore | None = None
        self._synced = (0, 0)  # (collection generation, attribute generation) the table reflects
        self._load_settings()

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, collection: Collection) -> AttributeIndex | None:
        """The collection's attribute index, or None when it has no attribute model (a store that
        keeps attribute vectors itself, Milvus, answers with its own)."""
        if hasattr(collection, "open_attributes"):
            return collection.open_attributes()
        index = cls(collection)
        return index if index.model_version else None

    @classmethod
    def configure(
        cls, collection: Collection, model: AttributeEncoder, *, rebuild: bool = False
    ) -> AttributeIndex:
        """The attribute index for ``model``, created when the collection has none. A collection
        indexed with another model is refused unless ``rebuild`` (its vectors are then dropped)."""
        if hasattr(collection, "configure_attributes"):
            return collection.configure_attributes(model, rebuild=rebuild)
        collection.check_encoder(model.backbone.version)
        index = cls(collection)
        if index.model_version and index.model_version != model.version and not rebuild:
            raise EncoderMismatchError(
                f"the attributes of {collection.path} were embedded with {index.model_version}; "
                f"{model.path.name} is {model.version}. Rebuild them with --rebuild"
            )
        with index.db.lock:
            index.db.conn.executescript(_SCHEMA)  # idempotent; executescript commits on its own
        with index.db.write():
            if index.model_version != model.version:
                installed = _install_model(model.path, collection.path)
                index.db.conn.execute("DELETE FROM item_attr_vectors")
                index.db.set_settings(
                    {
                        "attribute_model": installed,
                        "attribute_model_version": model.version,
                        "attribute_names": json.dumps(model.attributes),
                        "attribute_dim": str(model.dim),
                        "attribute_generation": str(index.generation() + 1),
                    }
                )
                (collection.path / "cache" / CACHE).unlink(missing_ok=True)
        index._load_settings()
        index._table = None
        return index

    def _load_settings(self) -> None:
        settings = dict(self.db.read("SELECT key, value FROM settings WHERE key LIKE 'attribute%'"))
        self.model_path = settings.get("attribute_model", "")
        self.model_version = settings.get("attribute_model_version", "")
        self.attributes: list[str] = json.loads(settings.get("attribute_names", "[]"))
        self.dim = int(settings.get("attribute_dim", "0"))

    def generation(self) -> int:
        """The attribute generation: bumped by every write of vectors."""
        rows = self.db.read("SELECT value FROM settings WHERE key='attribute_generation'")
        return int(rows[0][0]) if rows else 0

    def check_model(self, model: AttributeEncoder) -> None:
        """Refuse query vectors from another attribute model than the one that embedded the items."""
        if model.version != self.model_version:
            raise EncoderMismatchError(
                f"the attributes of {self.collection.path} were embedded with {self.model_version}, "
                f"not {model.version}; search with that model or rebuild: vestis attributes build --rebuild"
            )

    def load_model(self, threads: int | None = None, backbone: OnnxEncoder | None = None) -> AttributeEncoder:
        """The collection's copy of its attribute model (checked to be the very same file);
        ``backbone`` is shared when it is the model's backbone."""
        model = AttributeEncoder(self.collection.path / self.model_path, threads=threads, backbone=backbone)
        self.check_model(model)
        return model

    # ----------------------------------------------------------------- writing
    def missing(self) -> list[tuple[int, str, str, str]]:
        """(vid, id, source, content hash) of the items that have no attribute vectors yet."""
        return self.db.read(
            "SELECT vid, id, source, hash FROM items "
            "WHERE vid NOT IN (SELECT vid FROM item_attr_vectors) ORDER BY vid"
        )

    def add(self, vids: np.ndarray, vectors: np.ndarray) -> int:
        """Store the vectors (len(vids) x attributes x dim) of items in one transaction; items that
        left the collection meanwhile are skipped. Returns how many items were written."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape[1:] != (len(self.attributes), self.dim) or len(vectors) != len(vids):
            raise VestisError(
                f"attribute vectors must be {len(vids)} x {len(self.attributes)} x {self.dim}, "
                f"got {vectors.shape}"
            )
        with self.db.write():
            agen = self.generation() + 1
            self.db.set_settings({"attribute_generation": str(agen)})
            written = 0
            for vid, per_attribute in zip(np.asarray(vids).tolist(), vectors):
                if not self.db.read("SELECT 1 FROM items WHERE vid=?", (vid,)):
                    continue
                self.db.conn.executemany(
                    "INSERT OR REPLACE INTO item_attr_vectors VALUES (?, ?, ?, ?)",
                    [
                        (vid, a, np.ascontiguousarray(v).tobytes(), agen)
                        for a, v in zip(self.attributes, per_attribute)
                    ],
                )
                written += 1
        return written

    # ----------------------------------------------------------------- reading
    @property
    def lock(self) -> threading.RLock:
        return self.db.lock

    def table(self) -> VectorStore:
        """Every item's attribute vectors side by side (attributes x dim per row), brought up to
        date with the committed writes of any process."""
        with self.db.lock:
            if self._table is None:
                self._table, self._synced = self._load()
            self._catch_up()
            return self._table

    def _generations(self) -> tuple[int, int]:
        """(collection generation, attribute generation) now."""
        return self.db.generation(), self.generation()

    def _rows(self, where: str, params: tuple) -> tuple[np.ndarray, np.ndarray]:
        """vids and their stacked vectors (attributes in model order) of rows matching ``where``."""
        position = {a: i for i, a in enumerate(self.attributes)}
        found: dict[int, np.ndarray] = {}
        query = f"SELECT vid, attribute, vector FROM item_attr_vectors WHERE {where}"
        for vid, attribute, blob in self.db.read(query, params):
            if attribute in position:
                row = found.setdefault(vid, np.zeros((len(self.attributes), self.dim), np.float32))
                row[position[attribute]] = np.frombuffer(blob, np.float32)
        vids = np.array(sorted(found), np.int64)
        vectors = (
            np.stack([found[v].reshape(-1) for v in vids.tolist()])
            if len(vids)
            else np.zeros((0, len(self.attributes) * self.dim), np.float32)
        )
        return vids, vectors

    def _load(self) -> tuple[VectorStore, tuple[int, int]]:
        table = VectorStore(len(self.attributes) * self.dim)
        cache = self.collection.path / "cache" / CACHE
        if cache.exists():
            try:
                with np.load(cache) as z:
                    if str(z["model_version"]) == self.model_version:
                        table.append(z["vids"], z["vectors"])
                        return table, (int(z["generation"]), int(z["attribute_generation"]))
            except Exception as error:  # any damage: SQLite holds the truth
                log.warning("attribute cache %s is damaged (%s): rebuilt from SQLite", cache, error)
                cache.unlink(missing_ok=True)
                table = VectorStore(len(self.attributes) * self.dim)
        with self.db.snapshot():  # one snapshot: the generations match the rows read
            synced = self._generations()
            vids, vectors = self._rows("1", ())
        table.append(vids, vectors)
        return table, synced

    def _catch_up(self) -> None:
        table = self._table
        assert table is not None
        with self.db.snapshot():
            now = self._generations()
            if now == self._synced:
                return
            cgen, agen = self._synced
            vids, vectors = self._rows("agen > ?", (agen,))
            removed = [r[0] for r in self.db.read("SELECT vid FROM removed WHERE gen > ?", (cgen,))]
        table.swap_remove(vids)
        table.append(vids, vectors)
        table.swap_remove(np.array(removed, np.int64))
        self._synced = now

    def save(self) -> None:
        """Write ``cache/attributes.npz`` (atomic) so the next open skips reading SQLite."""
        with self.db.lock, self.collection.derived_files_lock():
            table = self.table()
            vids, vectors, _ = table.view
            cgen, agen = self._synced
            (self.collection.path / "cache").mkdir(exist_ok=True)

            def write(path: Path) -> None:
                with open(path, "wb") as f:
                    np.savez(
                        f,
                        vids=vids,
                        vectors=vectors,
                        generation=cgen,
                        attribute_generation=agen,
                        model_version=np.array(self.model_version),
                    )

            atomic_write(self.collection.path / "cache" / CACHE, write)

    def stored_vectors(self, vid: int) -> np.ndarray | None:
        """The stored attribute vectors (attributes x dim) of one item; None when it has none yet."""
        table = self.table()
        row = int(table.rows_of(np.array([vid]))[0])
        return None if row < 0 else table.vectors[row].reshape(len(self.attributes), self.dim).copy()

    def info(self) -> dict[str, object]:
        embedded = self.db.read("SELECT COUNT(DISTINCT vid) FROM item_attr_vectors")[0][0]
        return {
            "attribute_model": self.model_path,
            "attribute_model_version": self.model_version,
            "attributes": self.attributes,
            "dim": self.dim,
            "items_embedded": embedded,
            "items": len(self.collection),
        }


def _install_model(model_path: Path, collection_path: Path) -> str:
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

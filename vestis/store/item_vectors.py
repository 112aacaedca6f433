"""Extra vectors per item, kept beside a collection's own: the machinery shared by the attribute
vectors (:mod:`vestis.store.attribute_index`) and the joint text-image vectors
(:mod:`vestis.store.joint_index`).

A store of kind K holds, for every item, one L2-normalised vector per *slot* (an attribute, or the
single joint space), produced by one model. It lives in the collection's SQLite database::

    <table>(vid, <slot column>, vector BLOB, <generation column>)   one row per (item, slot)
    settings: K_model, K_model_version, K_names, K_dim, K_generation
    <model dir>/                                                  the collection's copy of the model

and follows the collection's rules: SQLite is the source of truth, the in-memory table and
``cache/<cache file>`` are derived. Every write of vectors is one transaction that bumps the
store's generation; a trigger deletes an item's rows in the transaction that deletes the item
(removal, or replacement by ``vestis index``), so no vector outlives its item. An in-memory table
loaded at (collection generation G, store generation H) catches up like the collection's index:
it drops the vids the collection removed after G and adds the rows written after H. Items added
later have no vectors until the store's build embeds the items that lack them (:meth:`missing`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from vestis.errors import EncoderMismatchError
from vestis.locks import RankedLock
from vestis.index.vectors import VectorStore
from vestis.store.atomic import atomic_write
from vestis.store.db import check_slot_vectors
from vestis.store.collection import Collection

log = logging.getLogger(__name__)


class ItemVectors:
    """One kind of per-item vectors of a collection (see the module docstring). Thread-safe.

    Subclasses name their kind: ``KIND`` (the settings prefix), ``TABLE``, ``SLOT`` and
    ``GENERATION`` (its column names), ``CACHE`` (the file under ``cache/``) and ``REBUILD_HINT``
    (the command that re-embeds every item)."""

    KIND: ClassVar[str]
    TABLE: ClassVar[str]
    SLOT: ClassVar[str]
    GENERATION: ClassVar[str]
    CACHE: ClassVar[str]
    REBUILD_HINT: ClassVar[str]

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.db = collection.db  # the collection's connection, lock and transactions
        self._table: VectorStore | None = None
        self._synced = (0, 0)  # (collection generation, store generation) the table reflects
        self._load_settings()

    @classmethod
    def _schema(cls) -> str:
        return f"""
CREATE TABLE IF NOT EXISTS {cls.TABLE}(
    vid INTEGER NOT NULL,
    {cls.SLOT} TEXT NOT NULL,
    vector BLOB NOT NULL,
    {cls.GENERATION} INTEGER NOT NULL,
    PRIMARY KEY (vid, {cls.SLOT})
);
CREATE INDEX IF NOT EXISTS {cls.TABLE}_{cls.GENERATION} ON {cls.TABLE}({cls.GENERATION});
CREATE TRIGGER IF NOT EXISTS {cls.TABLE}_forget AFTER DELETE ON items
BEGIN DELETE FROM {cls.TABLE} WHERE vid = OLD.vid; END;
"""

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, collection: Collection) -> Self | None:
        """The local collection's store of this kind, or None when it has no model for it (the
        vectors live in its SQLite; :mod:`vestis.store.factory` opens any store's)."""
        store = cls(collection)
        return store if store.model_version else None

    @classmethod
    def _configure(cls, collection: Collection, *, version: str, names: list[str], dim: int,
                   install: Callable[[], str], model_name: str, rebuild: bool) -> Self:
        """The store for a model of ``version`` (slots ``names``, vectors of ``dim``), created
        when the collection has none; ``install()`` copies the model into the collection and
        returns its path there. Another model's vectors are refused unless ``rebuild`` (they are
        then dropped)."""
        store = cls(collection)
        if store.model_version and store.model_version != version and not rebuild:
            raise EncoderMismatchError(
                f"the {cls.KIND} vectors of {collection.path} were embedded with {store.model_version}; "
                f"{model_name} is {version}. Rebuild them with --rebuild"
            )
        with store.db.lock:
            store.db.conn.executescript(cls._schema())  # idempotent; executescript commits on its own
        with store.db.write():
            if store.model_version != version:
                installed = install()
                store.db.conn.execute(f"DELETE FROM {cls.TABLE}")
                store.db.set_settings({
                    f"{cls.KIND}_model": installed,
                    f"{cls.KIND}_model_version": version,
                    f"{cls.KIND}_names": json.dumps(names),
                    f"{cls.KIND}_dim": str(dim),
                    f"{cls.KIND}_generation": str(store.generation() + 1),
                })
                (collection.path / "cache" / cls.CACHE).unlink(missing_ok=True)
        store._load_settings()
        store._table = None
        return store

    def _load_settings(self) -> None:
        settings = dict(self.db.read("SELECT key, value FROM settings WHERE key LIKE ?", (f"{self.KIND}%",)))
        self.model_path = settings.get(f"{self.KIND}_model", "")
        self.model_version = settings.get(f"{self.KIND}_model_version", "")
        self.names: list[str] = json.loads(settings.get(f"{self.KIND}_names", "[]"))
        self.dim = int(settings.get(f"{self.KIND}_dim", "0"))

    def generation(self) -> int:
        """The store's generation: bumped by every write of vectors."""
        rows = self.db.read("SELECT value FROM settings WHERE key=?", (f"{self.KIND}_generation",))
        return int(rows[0][0]) if rows else 0

    def check_version(self, version: str) -> None:
        """Refuse query vectors from another model than the one that embedded the items."""
        if version != self.model_version:
            raise EncoderMismatchError(
                f"the {self.KIND} vectors of {self.collection.path} were embedded with {self.model_version}, "
                f"not {version}; search with that model or rebuild: {self.REBUILD_HINT}"
            )

    # ----------------------------------------------------------------- writing
    def missing(self) -> list[tuple[int, str, str, str]]:
        """(vid, id, source, content hash) of the items that have no vectors of this kind yet."""
        return self.db.read(
            f"SELECT vid, id, source, hash FROM items WHERE vid NOT IN (SELECT vid FROM {self.TABLE}) ORDER BY vid"
        )

    def add(self, vids: np.ndarray, vectors: np.ndarray) -> int:
        """Store the vectors (len(vids) x slots x dim) of items in one transaction; items that
        left the collection meanwhile are skipped. Returns how many items were written."""
        vectors = check_slot_vectors(self.KIND, vids, vectors, len(self.names), self.dim)
        with self.db.write():
            gen = self.generation() + 1
            self.db.set_settings({f"{self.KIND}_generation": str(gen)})
            written = 0
            for vid, per_slot in zip(np.asarray(vids).tolist(), vectors):
                if not self.db.read("SELECT 1 FROM items WHERE vid=?", (vid,)):
                    continue
                self.db.conn.executemany(
                    f"INSERT OR REPLACE INTO {self.TABLE} VALUES (?, ?, ?, ?)",
                    [(vid, s, np.ascontiguousarray(v).tobytes(), gen) for s, v in zip(self.names, per_slot)],
                )
                written += 1
        return written

    # ----------------------------------------------------------------- reading
    @property
    def lock(self) -> RankedLock:
        return self.db.lock

    def table(self) -> VectorStore:
        """Every item's vectors side by side (slots x dim per row), brought up to date with the
        committed writes of any process."""
        with self.db.lock:
            if self._table is None:
                self._table, self._synced = self._load()
            self._catch_up()
            return self._table

    def _generations(self) -> tuple[int, int]:
        """(collection generation, store generation) now."""
        return self.db.generation(), self.generation()

    def _rows(self, where: str, params: tuple) -> tuple[np.ndarray, np.ndarray]:
        """vids and their stacked vectors (slots in model order) of rows matching ``where``."""
        position = {a: i for i, a in enumerate(self.names)}
        found: dict[int, np.ndarray] = {}
        for vid, slot, blob in self.db.read(f"SELECT vid, {self.SLOT}, vector FROM {self.TABLE} WHERE {where}",
                                            params):
            if slot in position:
                row = found.setdefault(vid, np.zeros((len(self.names), self.dim), np.float32))
                row[position[slot]] = np.frombuffer(blob, np.float32)
        vids = np.array(sorted(found), np.int64)
        vectors = (np.stack([found[v].reshape(-1) for v in vids.tolist()]) if len(vids)
                   else np.zeros((0, len(self.names) * self.dim), np.float32))
        return vids, vectors

    def _load(self) -> tuple[VectorStore, tuple[int, int]]:
        table = VectorStore(len(self.names) * self.dim)
        cache = self.collection.path / "cache" / self.CACHE
        if cache.exists():
            try:
                with np.load(cache) as z:
                    if str(z["model_version"]) == self.model_version:
                        table.append(z["vids"], z["vectors"])
                        return table, (int(z["generation"]), int(z["store_generation"]))
            except Exception as error:  # any damage: SQLite holds the truth
                log.warning("%s cache %s is damaged (%s): rebuilt from SQLite", self.KIND, cache, error)
                cache.unlink(missing_ok=True)
                table = VectorStore(len(self.names) * self.dim)
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
            cgen, sgen = self._synced
            vids, vectors = self._rows(f"{self.GENERATION} > ?", (sgen,))
            removed = [r[0] for r in self.db.read("SELECT vid FROM removed WHERE gen > ?", (cgen,))]
        table.swap_remove(vids)
        table.append(vids, vectors)
        table.swap_remove(np.array(removed, np.int64))
        self._synced = now

    def save(self) -> None:
        """Write ``cache/<cache file>`` (atomic) so the next open skips reading SQLite."""
        with self.db.lock, self.collection.derived_files_lock():
            table = self.table()
            vids, vectors, _ = table.view
            cgen, sgen = self._synced
            (self.collection.path / "cache").mkdir(exist_ok=True)

            def write(path: Path) -> None:
                with open(path, "wb") as f:
                    np.savez(f, vids=vids, vectors=vectors, generation=cgen, store_generation=sgen,
                             model_version=np.array(self.model_version))

            atomic_write(self.collection.path / "cache" / self.CACHE, write)

    def stored_vectors(self, vid: int) -> np.ndarray | None:
        """The stored vectors (slots x dim) of one item; None when it has none yet."""
        table = self.table()
        row = int(table.rows_of(np.array([vid]))[0])
        return None if row < 0 else table.vectors[row].reshape(len(self.names), self.dim).copy()

    def embedded(self) -> int:
        """How many items have vectors of this kind."""
        return self.db.read(f"SELECT COUNT(DISTINCT vid) FROM {self.TABLE}")[0][0]

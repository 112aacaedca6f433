"""Where a re-embedding (``vestis reindex``) puts the new vectors until it switches to them.

In the local collection they go to the table ``reindex_vectors`` (vid -> new vector) of the
collection's own database, beside the items' vectors in use, and into an ANN index built alongside
in memory. Writing them bumps no generation, so searches keep answering from the old vectors and
know nothing of them. :meth:`LocalStage.switch` is then one write transaction: it checks that every
item has a new vector (an item added meanwhile sends the caller back to embed it), moves the new
vectors into the items, records the new encoder and ``vectors_since`` (the generation from which
derived files hold the new vectors) and puts in place the ANN index of the new vectors, saved just
before it (the slow part, kept out of the transaction so that writers wait seconds). A kill before the
commit leaves the old state whole and the staged vectors for the next run; every other process
picks up the switch at its next read (:meth:`vestis.store.collection.Collection._sync`). With
``keep_old`` the old vectors go to ``previous_vectors`` for a rollback.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vestis.errors import VestisError
from vestis.index import make_index
from vestis.index.auto import EXACT_SPEC, concrete_spec, is_auto
from vestis.index.base import VectorIndex
from vestis.store.ann import IndexFiles
from vestis.store.atomic import atomic_write_dir
from vestis.store.db import Item, ItemDB

STAGE, KEPT = "reindex_vectors", "previous_vectors"  # the tables of the new and the kept old vectors
TARGET, PREVIOUS = "reindex_", "previous_"  # the prefixes of their encoders' settings
INDEX_ASIDE = "index-next"  # the new vectors' ANN index, saved before the switch (a later save deletes a stray one)


@dataclass(frozen=True)
class EncoderSettings:
    """What a collection records of the encoder its vectors come from."""

    name: str
    version: str
    source: str
    dim: int

    @classmethod
    def of(cls, encoder: Any) -> EncoderSettings:
        """Of an :class:`vestis.encoders.base.ImageEncoder`."""
        return cls(encoder.name, encoder.version, encoder.source or encoder.name, int(encoder.dim))

    def as_settings(self, prefix: str = "") -> dict[str, str]:
        return {f"{prefix}encoder_name": self.name, f"{prefix}encoder_version": self.version,
                f"{prefix}encoder_source": self.source, f"{prefix}dim": str(self.dim)}

    @staticmethod
    def keys(prefix: str = "") -> list[str]:
        return [f"{prefix}{key}" for key in ("encoder_name", "encoder_version", "encoder_source", "dim")]

    @classmethod
    def from_settings(cls, settings: dict[str, str], prefix: str = "") -> EncoderSettings | None:
        if f"{prefix}encoder_version" not in settings:
            return None
        return cls(settings[f"{prefix}encoder_name"], settings[f"{prefix}encoder_version"],
                   settings.get(f"{prefix}encoder_source") or settings[f"{prefix}encoder_name"],
                   int(settings[f"{prefix}dim"]))


class ReindexStage(Protocol):
    """The new vectors of a re-embedding into ``target``, beside the ones in use, in any store."""

    target: EncoderSettings

    def staged(self) -> int:
        """How many items have their new vector already (a resumed run embeds only the rest)."""
        ...

    def missing(self) -> list[Item]:
        """The items still without a new vector (added since, or not reached yet)."""
        ...

    def add(self, items: list[Item], vectors: np.ndarray) -> None:
        """Stage the new vectors of ``items`` (row-aligned)."""
        ...

    def switch(self, keep_old: bool) -> bool:
        """Make the new vectors the collection's in one atomic step; False (nothing changed) when
        items without a new vector arrived meanwhile."""
        ...


class LocalCollection(Protocol):
    """What the staging table uses of the local collection."""

    path: Path
    db: ItemDB
    dim: int

    @property
    def index_spec(self) -> str: ...
    @property
    def active_index_spec(self) -> str: ...
    def __len__(self) -> int: ...
    def derived_files_lock(self) -> AbstractContextManager[None]: ...


class LocalStage:
    """The staging table of a local collection (see the module docstring)."""

    def __init__(self, collection: LocalCollection, target: EncoderSettings, *, from_previous: bool = False) -> None:
        self.collection, self.db, self.target = collection, collection.db, target
        with self.db.write():
            for table in (STAGE, KEPT):
                self.db.conn.execute(f"CREATE TABLE IF NOT EXISTS {table}(vid INTEGER PRIMARY KEY, vector BLOB NOT NULL)")
            if from_previous:  # a rollback: the kept vectors are staged, only items added since are embedded
                self.db.conn.execute(f"DELETE FROM {STAGE}")
                self.db.conn.execute(f"INSERT INTO {STAGE} SELECT vid, vector FROM {KEPT}")
            elif EncoderSettings.from_settings(self.db.settings(), TARGET) != target:
                self.db.conn.execute(f"DELETE FROM {STAGE}")  # staged for another encoder: not resumable
            self.db.set_settings(target.as_settings(TARGET))
        self.spec = concrete_spec(collection.index_spec, len(collection), target.dim,
                                  collection.active_index_spec if target.dim == collection.dim else None)
        self.index = self._built_index()

    def _built_index(self) -> VectorIndex | None:
        """The ANN index of the staged vectors (None for the exact spec, which keeps no index)."""
        if self.spec == EXACT_SPEC:
            return None
        index = make_index(self.spec, self.target.dim)
        rows = self.db.read(f"SELECT vid, vector FROM {STAGE} ORDER BY vid")
        if rows:
            vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(-1, self.target.dim)
            index.add(np.array([r[0] for r in rows], np.int64), vectors.copy())
        return index

    def staged(self) -> int:
        return self.db.read(f"SELECT COUNT(*) FROM {STAGE}")[0][0]

    def missing(self) -> list[Item]:
        return self.db.items_where(f"vid NOT IN (SELECT vid FROM {STAGE})")

    def add(self, items: list[Item], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.shape != (len(items), self.target.dim):
            raise VestisError(f"new vectors must be {len(items)} x {self.target.dim}, got {vectors.shape}")
        vids = np.array([it.vid for it in items], np.int64)
        with self.db.write():
            self.db.conn.executemany(f"INSERT OR REPLACE INTO {STAGE} VALUES (?, ?)",
                                     [(int(v), row.tobytes()) for v, row in zip(vids, vectors)])
        if self.index is not None and len(vids):
            self.index.add(vids, vectors.copy())

    def _gone(self) -> list[int]:
        """Staged vids of items removed since they were staged."""
        return [r[0] for r in self.db.read(f"SELECT vid FROM {STAGE} WHERE vid NOT IN (SELECT vid FROM items) ORDER BY vid")]

    def switch(self, keep_old: bool) -> bool:
        conn = self.db.conn
        with self.collection.derived_files_lock():
            gone = self._gone()
            if self.index is not None:  # saved before the transaction (the slow part), adopted in it
                if gone:
                    self.index.remove(np.array(gone, np.int64))
                atomic_write_dir(self.collection.path / INDEX_ASIDE, self.index.save)
            with self.db.write():
                missing = conn.execute(f"SELECT 1 FROM items WHERE vid NOT IN (SELECT vid FROM {STAGE}) LIMIT 1")
                if missing.fetchone() or self._gone() != gone:  # items came or went while the index was saved
                    return False
                self._commit(keep_old)
        return True

    def _commit(self, keep_old: bool) -> None:
        """The switch's writes, inside its transaction."""
        conn = self.db.conn
        gen = self.db.bump()
        settings = self.db.settings()
        conn.execute(f"DELETE FROM {KEPT}")
        if keep_old:
            conn.execute(f"INSERT INTO {KEPT} SELECT vid, vector FROM items")
            old = EncoderSettings.from_settings(settings)
            assert old is not None
            self.db.set_settings(old.as_settings(PREVIOUS))
        else:
            self.db.drop_settings(EncoderSettings.keys(PREVIOUS))
        conn.execute(f"UPDATE items SET encoder_version=?, vector=(SELECT s.vector FROM {STAGE} s "
                     "WHERE s.vid=items.vid)", (self.target.version,))
        conn.execute(f"DELETE FROM {STAGE}")
        self.db.drop_settings(EncoderSettings.keys(TARGET))
        new = {**self.target.as_settings(), "vectors_since": str(gen)}
        if is_auto(self.collection.index_spec):
            new["index_auto_resolved"] = self.spec
        self.db.set_settings(new)
        if self.index is not None:  # in place before the commit: no process ever builds it after the switch
            IndexFiles(self.collection.path, self.target.dim).point(INDEX_ASIDE, self.index.spec, gen, gen)

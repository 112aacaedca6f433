"""A collection's vectors in memory, the generation they reflect, and their cache file.

The table is a :class:`vestis.index.vectors.VectorStore` (vectors, with the colour descriptors as
its extra columns) keyed by vid. ``cache/vectors-G.npz`` holds the table as of generation G, so an
open reads one file instead of every SQLite row; it is derived, named by the generation its
content reflects, and a damaged one is deleted and rebuilt from SQLite with a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vestis.index.vectors import VectorStore
from vestis.store.atomic import atomic_write
from vestis.store.db import DB_NAME, Changes, ItemDB

log = logging.getLogger(__name__)
CACHE_DIR = "cache"
_CACHE_NAME = re.compile(r"vectors-(\d+)\.npz")


def new_table(dim: int, colour_dim: int) -> VectorStore:
    return VectorStore(dim, extra_dim=colour_dim)


def add_rows(table: VectorStore, rows: Sequence[tuple[int, bytes, bytes | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Append (vid, vector, colour) rows read from SQLite; returns their vids and vectors."""
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, table.dim), np.float32)
    vids = np.array([r[0] for r in rows], np.int64)
    vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(-1, table.dim)
    colours = None
    if table.extra_dim:
        blank = bytes(4 * table.extra_dim)
        colours = np.frombuffer(b"".join(r[2] or blank for r in rows), np.float32).reshape(-1, table.extra_dim)
    table.append(vids, vectors, colours)
    return vids, vectors


class SyncedTable:
    """The vector table of one open collection and the generation ``synced`` it reflects."""

    def __init__(self, db: ItemDB, dim: int, colour_dim: int) -> None:
        self.db, self.dim, self.colour_dim = db, dim, colour_dim
        self.cache_dir = db.path / CACHE_DIR
        self.store, self.synced = self._load()

    def _cache_file(self, gen: int) -> Path:
        return self.cache_dir / f"vectors-{gen}.npz"

    def _cached(self) -> tuple[VectorStore, int] | None:
        """The newest cache file that is not ahead of SQLite, or None (a damaged one is deleted)."""
        now = self.db.generation()
        found = [(int(m.group(1)), f) for f in self.cache_dir.glob("vectors-*.npz")
                 if (m := _CACHE_NAME.fullmatch(f.name)) and int(m.group(1)) <= now]
        if not found:
            return None
        gen, cached = max(found)
        table = new_table(self.dim, self.colour_dim)
        try:
            with np.load(cached) as z:
                table.append(z["vids"], z["vectors"], z["colours"] if self.colour_dim else None)
            return table, gen
        except Exception as error:  # any damage (truncated zip, bad header): rebuild from SQLite
            log.warning("vector cache %s is damaged (%s): rebuilt from %s", cached, error, DB_NAME)
            cached.unlink(missing_ok=True)
            return None

    def _load(self) -> tuple[VectorStore, int]:
        cached = self._cached()
        if cached is not None:
            return cached  # the caller syncs it
        table = new_table(self.dim, self.colour_dim)
        with self.db.snapshot():
            gen = self.db.generation()
            rows = self.db.rows()
        add_rows(table, rows)
        return table, gen

    def pending(self) -> Changes | None:
        """What was committed since ``synced`` (read in the caller's transaction), or None."""
        if self.db.generation() == self.synced:
            return None
        return self.db.changes(self.synced)

    def apply(self, changes: Changes) -> tuple[np.ndarray, np.ndarray]:
        """Apply ``changes``; returns the vids and vectors added (for the ANN index)."""
        self.store.swap_remove(np.array(changes.removed, np.int64))
        added = add_rows(self.store, changes.added)
        self.synced = changes.generation
        return added

    def add(self, vids: np.ndarray, vectors: np.ndarray, colours: np.ndarray | None) -> None:
        self.store.append(vids, vectors, colours)

    def remove(self, vids: Sequence[int]) -> None:
        self.store.swap_remove(np.array(vids, np.int64))

    def save(self) -> None:
        """Write the cache file of generation ``synced`` (atomic) and drop older ones."""
        self.cache_dir.mkdir(exist_ok=True)
        vids, vectors, colours = self.store.view
        target = self._cache_file(self.synced)

        def write(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez(f, vids=vids, vectors=vectors, colours=colours)

        atomic_write(target, write)
        for old in self.cache_dir.glob("vectors-*.npz"):
            if old.name != target.name:
                old.unlink(missing_ok=True)

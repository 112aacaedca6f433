"""A collection's vector table, the generation it reflects, and its cache folder.

The table is a :class:`vestis.index.vectors.VectorStore` (vectors, with the colour descriptors as
its extra columns) keyed by vid. ``cache/vectors-G/`` holds the table as of generation G
(``vectors.npy``, ``vids.npy``, ``colours.npy``), so an open reads no SQLite row. The float32
vectors are left in ``vectors.npy`` (:mod:`vestis.index.mapped`): exact search streams them from
the OS file cache, re-scoring and "more like this" read the rows they need, and the process holds
only the vids and colours, so a million-item collection does not cost 5 GB of memory. The folder is
derived, named by the generation its content reflects, written aside and renamed into place; a
damaged one is deleted and rebuilt from SQLite with a warning.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vestis.errors import VestisError
from vestis.index.mapped import MappedRows
from vestis.index.vectors import VectorStore
from vestis.store.atomic import atomic_write_dir
from vestis.store.db import DB_NAME, Changes, ItemDB

log = logging.getLogger(__name__)
CACHE_DIR = "cache"
_CACHE_NAME = re.compile(r"vectors-(\d+)(\.npz)?")  # a folder; .npz: the single file of earlier versions


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

    def _cache_folder(self, gen: int) -> Path:
        return self.cache_dir / f"vectors-{gen}"

    def _read(self, cached: Path) -> VectorStore:
        """The table saved in the folder ``cached``, its vectors left in the file (or, from the
        single ``.npz`` file earlier versions wrote, read into memory until the next save)."""
        if cached.suffix == ".npz":
            table = new_table(self.dim, self.colour_dim)
            with np.load(cached) as z:
                table.append(z["vids"], z["vectors"], z["colours"] if self.colour_dim else None)
            return table
        vectors = MappedRows.open(cached / "vectors.npy")
        vids = np.load(cached / "vids.npy")
        n, dim = vectors.array.shape
        colours = np.load(cached / "colours.npy") if self.colour_dim else None
        if dim != self.dim or vids.shape != (n,) or (colours is not None and colours.shape != (n, self.colour_dim)):
            raise VestisError(f"shapes do not agree: vectors {vectors.array.shape}, vids {vids.shape}")
        return VectorStore(self.dim, vectors, vids, extra_dim=self.colour_dim, extra=colours)

    def _cached(self) -> tuple[VectorStore, int] | None:
        """The newest cache that is not ahead of SQLite nor older than its vectors (a re-embedding),
        or None (a damaged one is deleted)."""
        now, since = self.db.generation(), self.db.vectors_since()
        found = [(int(m.group(1)), f.is_dir(), f) for f in self.cache_dir.glob("vectors-*")
                 if (m := _CACHE_NAME.fullmatch(f.name)) and f.is_dir() != bool(m.group(2))
                 and since <= int(m.group(1)) <= now]
        if not found:
            return None
        gen, _folder, cached = max(found)  # of one generation, the folder is preferred
        try:
            return self._read(cached), gen
        except Exception as error:  # any damage (truncated file, bad header, lost file): rebuild from SQLite
            log.warning("vector cache %s is damaged (%s): rebuilt from %s", cached, error, DB_NAME)
            shutil.rmtree(cached) if cached.is_dir() else cached.unlink(missing_ok=True)
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
        """Write the cache folder of generation ``synced`` (atomic) and drop older ones (and
        the single-file caches of earlier versions)."""
        self.cache_dir.mkdir(exist_ok=True)
        vids, vectors, colours = self.store.view
        target = self._cache_folder(self.synced)

        def write(folder: Path) -> None:
            np.save(folder / "vectors.npy", vectors)
            np.save(folder / "vids.npy", vids)
            if self.colour_dim:
                np.save(folder / "colours.npy", colours)

        if not target.is_dir():  # a folder of generation G holds G's table: never rewrite the one mapped
            atomic_write_dir(target, write)
        for old in self.cache_dir.glob("vectors-*"):
            if old.name != target.name:
                shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)

"""The lifecycle of a collection's ANN index: the automatic choice, load, catch-up, save.

``index-G/`` holds the index as of generation G and ``index.json`` points at the current one
(``{"dir", "generation", "spec"}``). A saved index is loaded with its float32 vectors left in its
file (``vestis.index.mapped``: re-scoring reads the few rows it needs), so the collection's vector
table is the only copy in memory. A loaded index is caught up to the vector table's generation
with the removals and additions SQLite logged after G; an unreadable or stale one (another spec) is
rebuilt from the table. Saving writes a new directory aside, then swaps the pointer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from vestis.errors import VestisError
from vestis.index import load_index, make_index
from vestis.index.auto import EXACT_SPEC, choose_index, is_auto
from vestis.index.base import VectorIndex
from vestis.store.atomic import atomic_write_bytes, atomic_write_dir
from vestis.store.db import ItemDB
from vestis.store.table import SyncedTable

POINTER = "index.json"


def active_spec(index_spec: str, resolved: str | None) -> str:
    """The concrete spec in use: ``index_spec``, or what ``auto`` resolved to (see vestis.index.auto)."""
    return (resolved or EXACT_SPEC) if is_auto(index_spec) else index_spec


def auto_choice(index_spec: str, resolved: str | None, items: int, dim: int) -> str | None:
    """For ``auto``: the spec to move to at ``items`` items, or None when it stays as it is."""
    if not is_auto(index_spec):
        return None
    current = active_spec(index_spec, resolved)
    chosen = choose_index(items, dim, current=current)
    return chosen if chosen != current else None


class IndexFiles:
    """The saved ANN index of the collection at ``path``."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path, self.dim = path, dim

    def load(self, spec: str, table: SyncedTable, db: ItemDB) -> VectorIndex:
        """The saved index caught up to ``table.synced``, or one built from the table."""
        pointer = self.path / POINTER
        if pointer.exists():
            try:
                state = json.loads(pointer.read_text())
                saved = int(state["generation"])
                if (state.get("spec") == make_index(spec, self.dim).spec and saved <= table.synced
                        and state.get("vectors_since", 0) == db.vectors_since()):
                    # the index's float32 vectors stay in its file: the table holds the one copy in memory
                    index = load_index(self.path / state["dir"], mmap=True)
                    with db.snapshot():
                        changes = db.changes(saved, table.synced)
                    if changes.removed:
                        index.remove(np.array(changes.removed, np.int64))
                    if changes.added:
                        vids = np.array([r[0] for r in changes.added], np.int64)
                        vectors = np.frombuffer(b"".join(r[1] for r in changes.added), np.float32)
                        index.add(vids, vectors.reshape(-1, self.dim))
                    return index
            except (OSError, ValueError, KeyError, VestisError):
                pass  # unreadable, stale or ahead of the table: rebuilt below from the source of truth
        index = make_index(spec, self.dim)
        vids, vectors, _ = table.store.view
        if len(vids):
            index.add(vids.copy(), vectors.copy())
        return index

    def save(self, index: VectorIndex, gen: int, vectors_since: int) -> None:
        """Write ``index`` as of generation ``gen`` aside, then swap the pointer to it. The pointer
        records ``vectors_since`` (the re-embedding its vectors come from: see ItemDB.vectors_since),
        so an index saved for a re-embedding that never committed is not taken."""
        name = f"index-{gen}"
        atomic_write_dir(self.path / name, index.save)
        self.point(name, index.spec, gen, vectors_since)

    def point(self, name: str, spec: str, gen: int, vectors_since: int) -> None:
        """Make the saved index folder ``name`` (renamed ``index-GEN``) the current one, as of
        generation ``gen``, and delete the others."""
        if name != f"index-{gen}":
            shutil.rmtree(self.path / f"index-{gen}", ignore_errors=True)
            (self.path / name).rename(self.path / f"index-{gen}")
            name = f"index-{gen}"
        state = {"dir": name, "generation": gen, "spec": spec, "vectors_since": vectors_since}
        atomic_write_bytes(self.path / POINTER, json.dumps(state).encode())
        for old in self.path.glob("index-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def drop(self) -> None:
        (self.path / POINTER).unlink(missing_ok=True)
        for old in self.path.glob("index-*"):
            shutil.rmtree(old, ignore_errors=True)

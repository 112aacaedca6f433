"""The local collection: SQLite is the source of truth, the vector table and the ANN index derived.

Layout of a collection directory::

    collection.sqlite     items (id, source, stamp, hash, metadata JSON, encoder version,
                          vector and colour BLOBs), removed vector ids, settings; WAL mode
    cache/vectors-G/      the vectors of generation G, for a fast open, left in their file (vestis.store.table)
    index-G/              the ANN index as of generation G; ``index.json`` points at the current one
                          (vestis.store.ann)

:class:`Collection` composes the three parts: :class:`~vestis.store.db.ItemDB` (one connection,
every write one transaction that bumps the *generation*), :class:`~vestis.store.table.SyncedTable`
(vectors left in their cache file, colours in memory) and :class:`~vestis.store.ann.IndexFiles` (the ANN index). The
table and index record the generation they reflect and catch up from SQLite before every search
and every write, so a process (a server) never searches or saves anything other than what SQLite
holds while other processes (``vestis index``, ``vestis remove``) write too. Derived files are
written under an inter-process file lock and named by the generation their content reflects.
Killing a process at any moment leaves a collection that opens with every item committed before
the kill; temporary files a kill leaves behind are removed by the next save.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.locks import RankedLock
from vestis.index import make_index
from vestis.index.auto import EXACT_SPEC, concrete_spec, describe_choice, is_auto
from vestis.index.base import VectorIndex
from vestis.index.vectors import VectorStore
from vestis.store.ann import IndexFiles, active_spec, auto_choice
from vestis.store.db import DB_NAME, Item, ItemDB, NewItem, check_item_vectors
from vestis.store.nearest import nearest
from vestis.store.reindex_stage import PREVIOUS, EncoderSettings, LocalStage, ReindexStage
from vestis.store.settings import StoreSettings, new_settings
from vestis.store.table import SyncedTable

__all__ = ["DB_NAME", "Collection", "Item", "NewItem"]

LOCK_NAME = ".derived.lock"  # held while derived files (vector cache, index) are written


class Collection(StoreSettings):
    """A persistent, incrementally updatable collection of embedded catalogue items.

    Thread-safe: one lock serialises writes and in-memory updates; searches read the in-memory
    table and index under the same lock (they take milliseconds).
    """

    def __init__(self, path: Path, db: ItemDB) -> None:
        self.path = path
        self.db = db
        self._lock = db.lock
        self.settings = db.settings()
        self.dim = int(self.settings["dim"])
        self.colour_dim = int(self.settings.get("colour_dim", "0"))
        self._table: SyncedTable | None = None
        self._index: VectorIndex | None = None
        self._index_files = IndexFiles(path, self.dim)
        self._postings_cache: tuple[int, dict[str, dict[str, np.ndarray]]] | None = None

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(
        cls,
        path: Path | str,
        *,
        encoder_name: str,
        encoder_version: str,
        dim: int,
        colour_dim: int,
        colour_version: str = "",
        index_spec: str = "exact",
        encoder_source: str | None = None,
    ) -> Collection:
        """Create a new, empty collection (the directory may exist but must not hold one).
        ``encoder_source`` is what opens the encoder again (the path of an ONNX model file);
        default: ``encoder_name``, a built-in."""
        path = Path(path)
        if cls.exists(path):
            raise VestisError(f"{path} already holds a collection")
        make_index(concrete_spec(index_spec, 0, dim), dim)  # validate the spec before writing anything
        db = ItemDB.create(path, new_settings(
            encoder_name=encoder_name, encoder_version=encoder_version, encoder_source=encoder_source, dim=dim,
            colour_dim=colour_dim, colour_version=colour_version, index_spec=index_spec))
        return cls(path, db)

    @classmethod
    def open(cls, path: Path | str) -> Collection:
        path = Path(path)
        if not cls.exists(path):
            raise VestisError(f"no collection at {path} (create one with `vestis index SOURCE --collection {path}`)")
        return cls(path, ItemDB.open(path))

    @classmethod
    def exists(cls, path: Path | str) -> bool:
        """True when ``path`` holds a complete collection (its settings were committed)."""
        return ItemDB.exists(Path(path))

    @property
    def location(self) -> Path:
        return self.path

    def close(self) -> None:
        self.db.close()

    # ----------------------------------------------------------------- settings
    @property
    def generation(self) -> int:
        return self.db.generation()

    def set_setting(self, key: str, value: str) -> None:
        self.db.set_settings({key: value})
        self.settings[key] = value

    # ----------------------------------------------------------------- reading items
    def __len__(self) -> int:
        return self.db.count()

    def __contains__(self, item_id: str) -> bool:
        return self.db.contains(item_id)

    def get(self, item_id: str) -> Item:
        return self.db.get(item_id)

    def items_by_vid(self, vids: Sequence[int]) -> list[Item]:
        """Items for the given vids, in the same order (missing vids are skipped)."""
        return self.db.items_by_vid(vids)

    def iter_items(self) -> Iterator[Item]:
        """All items in vid order."""
        return self.db.iter_items()

    def page(self, offset: int, limit: int) -> list[Item]:
        """At most ``limit`` items after the first ``offset``, in the order they were added."""
        return self.db.page(offset, limit)

    def stamps(self) -> dict[str, tuple[str, str, str, str]]:
        """id -> (stamp, hash, source, catalogue) for incremental indexing."""
        return self.db.stamps()

    def vector_of(self, item_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        return self.db.vector_of(item_id)

    def stored_vectors(self, item_id: str, content_hash: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The vectors of ``item_id`` if it still holds the content with ``content_hash`` (else None)."""
        return self.db.stored_vectors(item_id, content_hash, self.encoder_version)

    def _postings(self) -> dict[str, dict[str, np.ndarray]]:
        """metadata key -> value -> vids, rebuilt when the generation moved (a write by any process)."""
        with self._lock:
            gen = self.generation
            if self._postings_cache is None or self._postings_cache[0] != gen:
                post: dict[str, dict[str, list[int]]] = {}
                for vid, meta in self.db.metadata_rows():
                    for key, value in json.loads(meta).items():
                        post.setdefault(key, {}).setdefault(str(value), []).append(vid)
                self._postings_cache = (gen, {
                    key: {value: np.array(vids, np.int64) for value, vids in values.items()}
                    for key, values in post.items()
                })
            return self._postings_cache[1]

    def metadata_columns(self, max_values: int = 50) -> dict[str, list[tuple[str, int]]]:
        """Each metadata key with its most frequent values and counts (for filters and the web page)."""
        out = {}
        for key, values in sorted(self._postings().items()):
            counts = sorted(((v, len(vids)) for v, vids in values.items()), key=lambda vc: (-vc[1], vc[0]))
            out[key] = counts[:max_values]
        return out

    def filter_vids(self, filters: dict[str, Sequence[str]]) -> np.ndarray:
        """vids whose metadata matches every filter (a key equals one of the listed values)."""
        postings = self._postings()
        result: np.ndarray | None = None
        for key, values in filters.items():
            values = [values] if isinstance(values, str) else list(values)
            if not values:
                continue
            column = postings.get(key, {})
            hits = [column[str(v)] for v in values if str(v) in column]
            matched = np.unique(np.concatenate(hits)) if hits else np.zeros(0, np.int64)
            result = matched if result is None else np.intersect1d(result, matched, assume_unique=True)
        return self.db.all_vids() if result is None else result

    # ----------------------------------------------------------------- writing
    def upsert(self, items: Sequence[NewItem]) -> list[int]:
        """Insert items (replacing any with the same id) in one transaction; returns their vids."""
        if not items:
            return []
        check_item_vectors(items, self.dim)
        with self._lock:
            with self.db.write():
                self._sync()
                self._check_embedded_by(items)
                gen = self.db.bump()
                replaced = self.db.delete([it.id for it in items], gen)
                vids = self.db.insert(items, gen, self.encoder_version)
            self._apply_removed(replaced)
            self._apply_added(np.array(vids, np.int64), items)
            self._mark_synced(gen)
        return vids

    def _check_embedded_by(self, items: Sequence[NewItem]) -> None:
        """Refuse vectors of an encoder other than the collection's: items embedded just before
        another process re-embedded the collection (``vestis reindex``) would be written as its."""
        for version in {it.encoder_version for it in items} - {"", self.encoder_version}:
            self.check_encoder(version)

    def update_stamps(self, stamps: Sequence[tuple[str, str]]) -> None:
        """Record new change stamps for items whose content did not change (no re-embedding)."""
        with self.db.write():
            self.db.set_stamps(stamps)

    def update_metadata(self, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """New labels for stored items; bumps the generation so every process's filters follow."""
        with self._lock:
            with self.db.write():
                self._sync()
                gen = self.db.bump()
                self.db.set_metadata(updates)
            self._mark_synced(gen)

    def remove(self, item_ids: Sequence[str]) -> int:
        """Remove items by id; unknown ids are ignored. Returns how many were removed."""
        with self._lock:
            with self.db.write():
                self._sync()
                gen = self.db.bump()
                removed = self.db.delete(list(item_ids), gen)
            self._apply_removed(removed)
            self._mark_synced(gen)
        return len(removed)

    def _mark_synced(self, gen: int) -> None:
        """After this handle's own write (applied in memory on top of a table synced just before it)."""
        if self._table is not None:
            self._table.synced = gen

    def _apply_added(self, vids: np.ndarray, items: Sequence[NewItem]) -> None:
        if self._table is None:
            return  # not loaded yet: loading reads the committed rows
        vectors = np.stack([it.vector for it in items]).astype(np.float32)
        colours = None
        if self.colour_dim:
            colours = np.stack(
                [np.zeros(self.colour_dim, np.float32) if it.colour is None else it.colour for it in items]
            ).astype(np.float32)
        self._table.add(vids, vectors, colours)
        if self._index is not None:
            self._index.add(vids, vectors)

    def _apply_removed(self, vids: list[int]) -> None:
        if not vids or self._table is None:
            return
        self._table.remove(vids)
        if self._index is not None:
            self._index.remove(np.array(vids, np.int64))

    # ----------------------------------------------------------------- vectors and index
    @property
    def lock(self) -> RankedLock:
        return self._lock

    def table(self) -> VectorStore:
        """All vectors (colours as the extra columns; the vectors may stay in their cache file), up
        to date with what any process committed."""
        with self._lock, self.db.snapshot():
            self._sync()  # before the first load, and after a re-embedding by another process, no table
            if self._table is None:
                self._table = SyncedTable(self.db, self.dim, self.colour_dim)
                self._sync()
            return self._table.store

    def _sync(self) -> None:
        """Apply to the table and index what other processes committed since the table's generation
        (inside a snapshot or write transaction, so the generation matches the rows)."""
        if self.db.vectors_since() > int(self.settings.get("vectors_since", "0")):
            self._reload()
        if self._table is None:
            return
        changes = self._table.pending()
        if changes is None:
            return
        vids, vectors = self._table.apply(changes)
        if self._index is not None:
            if changes.removed:
                self._index.remove(np.array(changes.removed, np.int64))
            if len(vids):
                self._index.add(vids, vectors.copy())

    def _reload(self) -> None:
        """Every vector was replaced by another process (``vestis reindex``): the settings (encoder,
        dimension) are read anew, the vector table and the ANN index on their next use."""
        self.settings = self.db.settings()
        self.dim = int(self.settings["dim"])
        self._index_files = IndexFiles(self.path, self.dim)
        self._index = self._table = None

    def refresh(self) -> None:
        """Catch up now with what other processes committed (a re-embedding's new encoder included)."""
        with self._lock, self.db.snapshot():
            self._sync()

    def stage_reindex(self, target: EncoderSettings, *, from_previous: bool = False) -> ReindexStage:
        """The staging area of a re-embedding into ``target`` (see vestis.store.reindex)."""
        return LocalStage(self, target, from_previous=from_previous)

    def previous_encoder(self) -> EncoderSettings | None:
        """The encoder whose vectors ``vestis reindex --keep-old`` kept, or None."""
        return EncoderSettings.from_settings(self.db.settings(), PREVIOUS)

    @property
    def uses_ann(self) -> bool:
        """False for the ``exact`` spec: exact search scores the in-memory table directly, so no
        second copy of the vectors is kept in an index."""
        return self.active_index_spec != EXACT_SPEC

    def index(self) -> VectorIndex:
        """The ANN index, up to date with what any process committed (only when ``uses_ann``)."""
        if not self.uses_ann:
            raise VestisError("the exact spec keeps no separate index: score collection.table() instead")
        with self._lock:
            self.table()
            if self._index is None:
                assert self._table is not None
                self._index = self._index_files.load(self.active_index_spec, self._table, self.db)
            return self._index

    def warm(self) -> None:
        """Load the vectors and the ANN index now rather than on the first search."""
        with self._lock:
            self.table()
            if self.uses_ann:
                self.index()

    def search_batch(self, vectors: np.ndarray, want: int, *, filters: dict[str, Sequence[str]] | None = None,
                     within: np.ndarray | None = None, exclude: Sequence[Sequence[int]] = (),
                     colours: np.ndarray | None = None, colour_weight: float = 0.0, index: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``want`` best vids and scores of each query (Q x want, padded with -1 / -inf) and how
        many items each could get, by :func:`vestis.store.nearest.nearest` over the vector table:
        only items matching ``filters`` and among the ``within`` vids, never a query's ``exclude``
        vids. ``index``: None or the active spec, the collection's ANN index (an exact scan for the
        exact spec); ``exact``, an exact scan; another spec, an index of it built from the table as
        ``vestis index --index SPEC`` builds one (for this call only, nothing saved)."""
        with self._lock:
            table = self.table()
            allowed = self.filter_vids(filters) if filters else None
            if within is not None:
                allowed = np.asarray(within, np.int64) if allowed is None else np.intersect1d(allowed, within)
            spec = self.active_index_spec if index is None else concrete_spec(index, len(table), self.dim)
            if spec == EXACT_SPEC:
                ann = None
            elif spec == self.active_index_spec:
                ann = self.index()
            else:
                make_index(spec, self.dim)  # a bad spec is refused before the build
                assert self._table is not None
                ann = self._index_files.load(spec, self._table, self.db)
            return nearest(table, vectors, want, ann=ann, allowed=allowed, exclude=exclude, colours=colours,
                           colour_weight=colour_weight)

    def set_index_spec(self, spec: str) -> None:
        """Switch to another index backend (rebuilt now from the stored vectors)."""
        make_index(concrete_spec(spec, len(self), self.dim), self.dim)
        with self._lock:
            self.set_setting("index_spec", spec)
            self._drop_index()
            self._resolve_auto()
            self.save_index()

    def _drop_index(self) -> None:
        self._index = None
        self._index_files.drop()

    @property
    def active_index_spec(self) -> str:
        """The concrete spec in use: ``index_spec``, or what ``auto`` resolved to (see vestis.index.auto)."""
        return active_spec(self.index_spec, self.settings.get("index_auto_resolved"))

    def _resolve_auto(self) -> None:
        """For ``auto``: move to the spec chosen for the current item count (the index is rebuilt
        on the next save when that changes the choice)."""
        with self._lock:
            chosen = auto_choice(self.index_spec, self.settings.get("index_auto_resolved"), len(self), self.dim)
            if chosen is not None:
                self.set_setting("index_auto_resolved", chosen)
                self._drop_index()

    # ----------------------------------------------------------------- derived files
    @contextlib.contextmanager
    def derived_files_lock(self) -> Iterator[None]:
        """Serialise the writing of derived files between processes (a server saving at shutdown
        while ``vestis index`` saves), so temporary files found while holding it are orphans."""
        with open(self.path / LOCK_NAME, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_orphans(self) -> None:
        """Delete temporary files and folders left by a process killed while saving."""
        for orphan in [*self.path.glob(".*.tmp"), *(self.path / "cache").glob(".*.tmp")]:
            if orphan.is_dir():
                shutil.rmtree(orphan, ignore_errors=True)
            else:
                orphan.unlink(missing_ok=True)

    def save_index(self) -> None:
        """Persist the index, recorded with the generation its content reflects."""
        if not self.uses_ann:
            return
        with self._lock, self.derived_files_lock():
            self._save_index()

    def _save_index(self) -> None:
        index = self.index()
        assert self._table is not None
        self._index_files.save(index, self._table.synced, self.db.vectors_since())

    def persist(self) -> None:
        """Save the derived files (vectors and index) so the next open is fast, and remove the
        temporary files of any process killed while saving."""
        with self._lock, self.derived_files_lock():
            self._remove_orphans()
            self.table()
            assert self._table is not None
            self._table.save()
            self._resolve_auto()
            if self.uses_ann:
                self._save_index()

    # ----------------------------------------------------------------- summary
    def info(self) -> dict[str, Any]:
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        catalogues = [{"catalogue": c, "items": n} for c, n in self.db.catalogue_counts()]
        return {
            "path": str(self.path),
            "items": len(self),
            **self.encoder_info(),
            "index": self.active_index_spec,
            "index_choice": describe_choice(self.dim) if is_auto(self.index_spec) else "explicit",
            "generation": self.generation,
            "catalogues": catalogues,
            "disk_bytes": size,
            "metadata_columns": sorted(self.metadata_columns(max_values=1)),
        }

"""A vestis collection on Milvus: its items, their vectors, search and writes (the layout is in
:mod:`.layout`, the connection in :mod:`.connection`, per-item vectors in :mod:`.item_vectors`).

Writes: each batch is one upsert request per Milvus collection (all of it or none of it reaches
Milvus), so a killed ``vestis index`` keeps every batch sent before and a re-run embeds only what is
missing; in the split layout an item's colour is written before the item, so a committed item
always has its colour. A replaced item gets a new ``vid`` (random 63-bit: no coordination between
writers), and its per-item vectors are dropped, as in the local store. Every write ends by storing
a new ``generation`` in the settings, so caches keyed by it (the keyword index, metadata columns)
are rebuilt after a write by any process. The index is chosen like the local ``auto``: FLAT
(exact) while a query scans at most as many bytes as the local exact search would, then HNSW with
inner product; it is switched on ``persist`` (end of ``vestis index``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import NotFoundError, VestisError
from vestis.index.auto import EXACT_SPEC, exact_limit, is_auto
from vestis.index.vectors import VectorStore
from vestis.locks import RankedLock
from vestis.store.db import Item, NewItem, check_item_vectors
from vestis.store.location import Location, parse_location
from vestis.store.milvus.connection import QUERY_CONSISTENCY, MilvusConnection
from vestis.store.milvus.expressions import filter_expression, vids_in
from vestis.store.milvus.items import ItemRows, as_item, item_row, labels_of
from vestis.store.milvus.item_vectors import SEARCH_LIMIT, MilvusAttributes
from vestis.store.milvus.search import search_rows
from vestis.store.milvus.layout import (ITEM_FIELDS, MAX_ID, MAX_SOURCE, ONE, Settings, auto_index, build_params,
                                        create_layout, keyed, new_generation, parse_index_spec, search_params,
                                        settings_of)
from vestis.store.milvus.reindex import PREVIOUS_PHYSICAL, SERIAL, MilvusStage, heal_alias
from vestis.store.reindex_stage import EncoderSettings, ReindexStage
from vestis.store.nearest import excluded, nearest
from vestis.store.settings import StoreSettings, new_settings

COLOUR_FETCH = 10  # deep candidates per wanted result re-scored when colour is fused in


def _no_collection(location: Location) -> VestisError:
    return VestisError(f"no collection at {location} (create one with "
                       f"`vestis index SOURCE --collection {location}`)")


class MilvusCollection(StoreSettings):
    """A vestis collection stored in Milvus (see the module docstring). Thread-safe."""


    def __init__(self, location: Location, db: MilvusConnection) -> None:
        self.location = location
        self.db = db
        self.path: Path = location.files  # side files (splits, attribute model, uploads)
        self.path.mkdir(parents=True, exist_ok=True)
        self.name = location.name
        self._settings = Settings(db, self.name)
        self._columns: tuple[int, dict[str, dict[str, int]]] | None = None
        stored = self._settings.read()
        if not stored:
            raise _no_collection(location)
        self._load(stored)
        self.colour_dim = int(self.settings.get("colour_dim", "0"))
        self.layout = self.settings.get("layout", ONE)
        self.rows = ItemRows(db, self.name, self.colour_dim, self.layout)

    # ----------------------------------------------------------------- opening
    @classmethod
    def exists(cls, location: str | Path | Location) -> bool:
        location = location if isinstance(location, Location) else parse_location(location)
        if location.kind == "milvus-lite" and not Path(location.uri).exists():
            return False
        db = MilvusConnection.connect(location)
        try:
            return bool(Settings(db, location.name).read())
        finally:
            db.close()

    @classmethod
    def open(cls, location: str | Path | Location) -> MilvusCollection:
        location = location if isinstance(location, Location) else parse_location(location)
        if location.kind == "milvus-lite" and not Path(location.uri).exists():
            raise _no_collection(location)
        db = MilvusConnection.connect(location)
        try:
            return cls(location, db)
        except BaseException:
            db.close()
            raise

    @classmethod
    def create(cls, location: str | Path | Location, *, encoder_name: str, encoder_version: str, dim: int,
               colour_dim: int, colour_version: str = "", index_spec: str = "auto",
               encoder_source: str | None = None) -> MilvusCollection:
        """Create the Milvus collections of a new vestis collection; the settings are written last,
        so one interrupted half-way is not taken for a collection (and is recreated next time)."""
        location = location if isinstance(location, Location) else parse_location(location)
        if not is_auto(index_spec):
            parse_index_spec(index_spec)
        db = MilvusConnection.connect(location)
        try:
            if Settings(db, location.name).read():
                raise VestisError(f"{location} already holds a collection")
            create_layout(db, location.name, dim, colour_dim, [MilvusAttributes.suffix()], new_settings(
                encoder_name=encoder_name, encoder_version=encoder_version, encoder_source=encoder_source, dim=dim,
                colour_dim=colour_dim, colour_version=colour_version, index_spec=index_spec))
            return cls(location, db)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def _load(self, stored: dict[str, str]) -> None:
        """Take the settings of the physical collection the name stands for now."""
        self.physical = heal_alias(self.db, self.name, stored)
        self.settings = settings_of(stored, self.physical)
        self.dim = int(self.settings["dim"])

    # ----------------------------------------------------------------- settings
    @property
    def active_index_spec(self) -> str:
        return self.settings.get("index_active", "exact")

    @property
    def generation(self) -> int:
        """The collection's change stamp, as stored in Milvus: a new one after every write."""
        return int(self.setting("generation") or 0)

    @property
    def lock(self) -> RankedLock:
        return self.db.lock

    def setting(self, key: str) -> str | None:
        """One setting as Milvus holds it now (another process may have written it)."""
        return self._settings.value(key)

    def set_setting(self, key: str, value: str) -> None:
        self.set_settings({key: value})

    def set_settings(self, values: dict[str, str]) -> None:
        with self.lock:
            self._settings.write(keyed(values, self.physical))
            self.settings.update(values)

    def _changed(self) -> None:
        self.set_settings({"generation": str(new_generation())})

    def _colour(self, row: dict[str, Any]) -> np.ndarray | None:
        return np.asarray(row["colour"], np.float32) if self.colour_dim else None

    # ----------------------------------------------------------------- reading items
    def __len__(self) -> int:
        return self.rows.count()

    def __contains__(self, item_id: str) -> bool:
        return bool(self.rows.get([item_id], ["vid"], what="read an item"))

    def get(self, item_id: str) -> Item:
        rows = self.rows.get([item_id], ITEM_FIELDS, what="read an item")
        if not rows:
            raise NotFoundError(f"no item {item_id!r} in collection {self.location}")
        return as_item(rows[0])

    def rows_by_vid(self, vids: Sequence[int], fields: Sequence[str] = ("id", "labels"),
                    with_colour: bool = False) -> dict[int, dict[str, Any]]:
        """vid -> the row (``fields``, ``vid``, and ``colour`` if asked) of each item among ``vids``."""
        return self.rows.by_vid(vids, fields, with_colour)

    def items_by_vid(self, vids: Sequence[int]) -> list[Item]:
        """Items for the given vids, in the same order (missing vids are skipped)."""
        found = self.rows_by_vid(vids, ITEM_FIELDS)
        return [as_item(found[int(v)]) for v in vids if int(v) in found]

    def iter_items(self) -> Iterator[Item]:
        """All items in vid order."""
        yield from sorted((as_item(r) for r in self.rows.scan(ITEM_FIELDS)), key=lambda it: it.vid)

    def sources(self) -> list[tuple[int, str, str, str]]:
        """(vid, id, source, content hash) of every item."""
        return [(int(r["vid"]), r["id"], r["source"], r["hash"])
                for r in self.rows.scan(["vid", "id", "source", "hash"])]

    def stamps(self) -> dict[str, tuple[str, str, str, str]]:
        """id -> (stamp, hash, source, catalogue) for incremental indexing."""
        return {r["id"]: (r["stamp"], r["hash"], r["source"], r["catalogue"])
                for r in self.rows.scan(["id", "stamp", "hash", "source", "catalogue"])}

    def vector_of(self, item_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        rows = self.rows.get([item_id], ["id", "vector"], colour=True, what="read an item")
        if not rows:
            raise NotFoundError(f"no item {item_id!r} in collection {self.location}")
        return np.asarray(rows[0]["vector"], np.float32), self._colour(rows[0])

    def stored_vectors(self, item_id: str, content_hash: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The vectors of ``item_id`` if it still holds the content with ``content_hash`` (else None)."""
        rows = self.rows.get([item_id], ["id", "hash", "vector"], colour=True, what="read an item")
        if not rows or rows[0]["hash"] != content_hash:
            return None
        row = rows[0]
        return np.asarray(row["vector"], np.float32), self._colour(row)

    def table(self) -> VectorStore:
        """Every vector (and colour descriptor, as the extra columns) in memory, in vid order: for
        ``vestis eval``, which ranks all items exactly; searches run in Milvus."""
        rows = list(self.rows.scan(["id", "vid", "vector"], colour=True))
        rows.sort(key=lambda r: int(r["vid"]))
        vectors = np.asarray([r["vector"] for r in rows], np.float32).reshape(len(rows), self.dim)
        colour = (np.asarray([r["colour"] for r in rows], np.float32).reshape(len(rows), self.colour_dim)
                  if self.colour_dim else None)
        return VectorStore(self.dim, vectors, np.array([int(r["vid"]) for r in rows], np.int64),
                           extra_dim=self.colour_dim, extra=colour)

    def page(self, offset: int, limit: int) -> list[Item]:
        """At most ``limit`` items after the first ``offset`` (in Milvus's scan order)."""
        out: list[Item] = []
        for n, row in enumerate(self.rows.scan(ITEM_FIELDS)):
            if n >= offset + limit:
                break
            if n >= offset:
                out.append(as_item(row))
        return out

    def _column_counts(self) -> dict[str, dict[str, int]]:
        with self.lock:
            generation = self.generation
            if self._columns is None or self._columns[0] != generation:
                self._columns = (generation, self.rows.label_counts())
            return self._columns[1]

    def metadata_columns(self, max_values: int = 50) -> dict[str, list[tuple[str, int]]]:
        """Each metadata key with its most frequent values and counts (for filters and the web page)."""
        return {key: sorted(values.items(), key=lambda vc: (-vc[1], vc[0]))[:max_values]
                for key, values in sorted(self._column_counts().items())}

    def expression(self, filters: dict[str, Sequence[str] | str] | None, exclude: Sequence[int] = ()) -> str | None:
        """The Milvus expression of ``filters`` and of vids to ``exclude``, without the filter values
        no item holds (so its size is bounded by the collection's values, whatever a request
        gives); None when a filter matches no item."""
        kept: dict[str, list[str]] = {}
        if filters:
            columns = self._column_counts()
            for key, values in filters.items():
                values = [values] if isinstance(values, str) else list(values)
                if values:
                    known = columns.get(str(key), {})
                    kept[key] = [v for v in dict.fromkeys(map(str, values)) if v in known]
                    if not kept[key]:
                        return None
        return filter_expression(kept, exclude, self.db.json_in)

    def filter_vids(self, filters: dict[str, Sequence[str]]) -> np.ndarray:
        """vids whose metadata matches every filter (evaluated by Milvus)."""
        return self.filter_expr_vids(self.expression(filters))

    def filter_expr_vids(self, expr: str | None) -> np.ndarray:
        """vids of the items matching the Milvus expression ``expr`` (none for None), sorted."""
        vids = [] if expr is None else [int(r["vid"]) for r in self.rows.scan(["vid"], expr)]
        return np.array(sorted(vids), np.int64)

    # ----------------------------------------------------------------- searching
    def warm(self) -> None:
        """Nothing to load: the server keeps the vectors and ranks them."""

    def search_batch(self, vectors: np.ndarray, want: int, *, filters: dict[str, Sequence[str]] | None = None,
                     within: np.ndarray | None = None, exclude: Sequence[Sequence[int]] = (),
                     colours: np.ndarray | None = None, colour_weight: float = 0.0, index: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``want`` best vids and scores of each query (Q x want, padded with -1 / -inf) and how
        many items each could get: ranked by Milvus with the collection's index
        (:func:`vestis.store.milvus.search.search_rows`). ``index="exact"`` on a collection indexed otherwise ranks its vectors here,
        by the local store's exact scan; a Milvus index of another spec is built by ``vestis index
        --index SPEC``, not for one call."""
        if index not in (None, EXACT_SPEC, self.active_index_spec):
            raise VestisError(f"{self.location} is ranked by its own Milvus index ({self.active_index_spec}) or "
                              f"exactly; build a {index} index with `vestis index --collection {self.location} "
                              f"--index {index}`")
        expr = self.expression(filters)
        if within is not None and expr is not None:
            expr = " and ".join(filter(None, [expr, vids_in(within)]))
        if index == EXACT_SPEC and self.active_index_spec != EXACT_SPEC:
            allowed = self.filter_expr_vids(expr) if (filters or within is not None) else None
            return nearest(self.table(), vectors, want, allowed=allowed, exclude=exclude, colours=colours,
                           colour_weight=colour_weight)
        ex = excluded(exclude, len(vectors))
        if expr is None:
            return (np.full((len(vectors), want), -1, np.int64), np.full((len(vectors), want), -np.inf, np.float32),
                    np.zeros(len(vectors), np.int64))
        fetch = want + ex.shape[1]
        fetch = min(max(fetch * COLOUR_FETCH, 200) if colour_weight else fetch, SEARCH_LIMIT)
        out_v, out_s = search_rows(self.rows, vectors, want, fetch, expr, search_params(self.active_index_spec, fetch),
                                   ex, colours, colour_weight)
        # the excluded vids that the filter lets through are not eligible
        asked = np.unique(ex[ex >= 0])
        passing = self.filter_expr_vids(" and ".join(filter(None, [expr, vids_in(asked)]))) if len(asked) else asked
        eligible = self.rows.count(expr, QUERY_CONSISTENCY) - np.isin(ex, passing).sum(axis=1)
        return out_v, out_s, eligible

    # ----------------------------------------------------------------- writing
    def _vids_of(self, ids: Sequence[str]) -> list[int]:
        return [int(r["vid"]) for r in self.rows.get(ids, ["vid"])]

    def upsert(self, items: Sequence[NewItem]) -> list[int]:
        """Insert items (replacing any with the same id), one upsert request per batch; returns their vids."""
        if not items:
            return []
        for it in items:
            if len(it.id.encode()) > MAX_ID or len(it.source.encode()) > MAX_SOURCE:
                raise VestisError(f"item {it.id[:80]!r}: id or source is too long for Milvus")
        with self.lock:
            self.refresh()  # items embedded just before a `vestis reindex` switched are refused after it
            check_item_vectors(items, self.dim)
            for version in {it.encoder_version for it in items} - {"", self.encoder_version}:
                self.check_encoder(version)
            replaced = self._vids_of([it.id for it in items])
            rows = [item_row(it, secrets.randbits(63), self.colour_dim) for it in items]
            self.rows.write(rows)
            self._forget_vectors(replaced)
            self._changed()
        return [row["vid"] for row in rows]

    def _rewrite(self, ids: Sequence[str], change: Callable[[dict[str, Any]], None], what: str) -> None:
        """Read whole rows, change them, write them back (Milvus upserts whole rows)."""
        with self.lock:
            rows = self.rows.get(ids, [*ITEM_FIELDS, "labels", "vector"], colour=True)
            for row in rows:
                change(row)
            self.rows.write(rows, what)
            self._changed()

    def update_stamps(self, stamps: Sequence[tuple[str, str]]) -> None:
        """Record new change stamps for items whose content did not change (no re-embedding)."""
        new = dict(stamps)
        self._rewrite(list(new), lambda row: row.update(stamp=new[row["id"]]), "write change stamps")

    def update_metadata(self, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        new = {item_id: labels_of(metadata) for item_id, metadata in updates}

        def change(row: dict[str, Any]) -> None:
            row["metadata"], row["labels"] = new[row["id"]]

        self._rewrite(list(new), change, "write metadata")
        attributes = self.open_attributes()
        if attributes is not None:
            attributes.relabel({item_id: labels for item_id, (_m, labels) in new.items()})

    def remove(self, item_ids: Sequence[str]) -> int:
        """Remove items by id; unknown ids are ignored. Returns how many were removed."""
        ids = list(item_ids)
        with self.lock:
            vids = self._vids_of(ids)
            self.rows.delete(ids)
            self._forget_vectors(vids)
            self._changed()
        return len(vids)

    def _forget_vectors(self, vids: list[int]) -> None:
        attributes = self.open_attributes()
        if attributes is not None:
            attributes.forget(vids)

    # ----------------------------------------------------------------- index and persistence
    def set_index_spec(self, spec: str) -> None:
        """Use another index (auto, exact, hnsw, ivf): rebuilt now by Milvus."""
        if not is_auto(spec):
            parse_index_spec(spec)
        self.set_setting("index_spec", spec)
        self._apply_index()

    def _apply_index(self) -> None:
        wanted = (auto_index(len(self), self.dim, self.active_index_spec) if is_auto(self.index_spec)
                  else self.index_spec)
        if wanted != self.active_index_spec:
            kind, params = build_params(wanted)
            with self.lock:
                self.db.rebuild_index(self.name, kind, params)
                self.set_setting("index_active", wanted)

    def persist(self) -> None:
        """Flush written rows to Milvus's storage and move to the index ``auto`` chooses now."""
        with self.lock:
            self.rows.flush()
            self._apply_index()

    def refresh(self) -> None:
        """Every read asks Milvus; only a ``vestis reindex`` that moved the alias to other vectors
        (and their encoder settings) is caught up with."""
        if (self.physical != self.name or self.setting(SERIAL)) and self.db.physical(self.name) != self.physical:
            with self.lock:
                self._load(self._settings.read())

    def stage_reindex(self, target: EncoderSettings, *, from_previous: bool = False) -> ReindexStage:
        """A new physical collection beside the one in use, switched to by moving the alias
        (:mod:`vestis.store.milvus.reindex`)."""
        return MilvusStage(self, target, from_previous=from_previous)

    def previous_encoder(self) -> EncoderSettings | None:
        stored = self._settings.read()
        kept = stored.get(PREVIOUS_PHYSICAL)
        return EncoderSettings.from_settings(settings_of(stored, kept)) if kept else None

    # ----------------------------------------------------------------- attributes
    def open_attributes(self) -> MilvusAttributes | None:
        """The attribute vectors of this collection, or None when it has no attribute model."""
        return MilvusAttributes.open(self)

    def configure_attributes(self, model: Any, *, rebuild: bool = False) -> MilvusAttributes:
        """The attribute vectors for ``model`` (created, or dropped and recreated for another model
        when ``rebuild``); see :meth:`vestis.store.attribute_index.AttributeIndex.configure`."""
        from vestis.store.attribute_index import install_model

        self.check_encoder(model.backbone.version)
        return MilvusAttributes.configure(self, version=model.version, names=list(model.attributes), dim=model.dim,
                                          install=lambda: install_model(model.path, self.path),
                                          model_name=model.path.name, rebuild=rebuild)

    # ----------------------------------------------------------------- summary
    def info(self) -> dict[str, Any]:
        catalogues: dict[str, int] = {}
        for row in self.rows.scan(["catalogue"]):
            catalogues[row["catalogue"]] = catalogues.get(row["catalogue"], 0) + 1
        disk = None  # a server's storage is not ours to measure
        if self.location.kind == "milvus-lite":
            disk = sum(p.stat().st_size for p in Path(self.location.uri).rglob("*") if p.is_file())
        kind, params = parse_index_spec(self.active_index_spec)
        shown = {k: v for k, v in params.items() if v is not None}
        return {
            "path": str(self.location),
            "store": self.location.kind,
            "layout": "one Milvus collection for items and colours" if self.layout == ONE
                      else "colours in their own Milvus collection (one vector field per collection)",
            "items": sum(catalogues.values()),
            **self.encoder_info(),
            "index": f"milvus {kind} (inner product){' ' + json.dumps(shown) if shown else ''}",
            "index_choice": (f"auto: exact (FLAT) up to {exact_limit(self.dim):,} items at dim {self.dim}, "
                             "then HNSW" if is_auto(self.index_spec) else "explicit"),
            "generation": self.generation,
            "catalogues": [{"catalogue": c, "items": n} for c, n in sorted(catalogues.items())],
            "disk_bytes": disk,
            "metadata_columns": sorted(self._column_counts()),
        }

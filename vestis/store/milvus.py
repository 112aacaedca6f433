"""A collection on Milvus (a server or cluster, or Milvus Lite in a file), through pymilvus's MilvusClient.

It offers what the rest of vestis uses on a local :class:`~vestis.store.collection.Collection`
(items, change stamps for incremental indexing, metadata filters, search by vector, colour and
attribute vectors, settings), so ``vestis index``, ``search``, ``remove``, ``eval`` and ``serve``
work on it unchanged. Layout, for a vestis collection named NAME::

    NAME              one row per item: id (primary key), vid, source, catalogue, stamp, hash,
                      metadata (JSON, as given), labels (JSON, every value as text: what filters
                      match), vector (the global embedding), colour (the colour descriptor)
    NAME__settings    key -> value: encoder name/version/source, dims, index spec, attribute model
    NAME__attributes  one row per item with attribute vectors: vid (primary key), id, labels, and
                      one vector = the item's per-attribute vectors side by side, then its colour

Milvus limits the vector fields of a collection, so the attribute vectors of all attributes share
one field: the weighted sum of per-attribute cosine similarities (plus the colour term) is then one
inner product with a query that holds each asked attribute's vector times its weight, and zeros
elsewhere, so attribute search is one pushed-down search too. Metadata filters become Milvus
boolean expressions over ``labels`` (values escaped), evaluated by Milvus inside the search.

Writes: each batch is one upsert request (all of it or none of it reaches Milvus), so a killed
``vestis index`` keeps every batch sent before and a re-run embeds only what is missing. A
replaced item gets a new ``vid`` (random 63-bit: no coordination between writers), and its
attribute row is dropped, as in the local store. The index is chosen like the local ``auto``:
FLAT (exact) while a query scans at most as many bytes as the local exact search would, then
HNSW with inner product; it is switched on ``persist`` (end of ``vestis index``).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from vestis.errors import EncoderMismatchError, IndexSpecError, NotFoundError, VestisError
from vestis.index.auto import ANN_SPEC, EXACT_SPEC, choose_index, exact_limit, is_auto
from vestis.index.vectors import VectorStore
from vestis.store.db import Item, NewItem, metadata_json
from vestis.store.location import Location, milvus_credentials, parse_location
from vestis.store.settings import StoreSettings, new_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = "1"
SETTINGS, ATTRIBUTES = "__settings", "__attributes"
ITEM_FIELDS = ["id", "vid", "source", "metadata", "hash", "stamp", "catalogue"]
MAX_ID, MAX_SOURCE, MAX_TEXT = 1024, 65535, 4096
WRITE_ROWS = 256  # rows per upsert request (far below Milvus's 64 MB request limit at 1280-d)
READ_ROWS = 1000  # rows per query page / ids per `in` list
CONNECT_TIMEOUT_S = 10
HNSW_DEFAULTS = {"M": 32, "efConstruction": 200, "ef": 64}
IVF_DEFAULTS = {"nlist": 1024, "nprobe": 32}
COLOUR_FETCH = 10  # deep candidates per wanted result re-scored when colour is fused in

def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise VestisError("a Milvus collection needs pymilvus: pip install 'vestis[milvus]'") from None
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # its RPC errors come back as VestisErrors
    return pymilvus


def literal(text: str) -> str:
    """``text`` as a Milvus expression string literal (double quotes; backslash, quote, newline,
    tab and carriage return escaped). Other control characters cannot be written and are refused."""
    if any(ord(c) < 32 and c not in "\n\r\t" for c in text):
        raise VestisError(f"filter value {text!r} holds a control character")
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def filter_expression(filters: dict[str, Sequence[str] | str] | None, exclude: Sequence[int] = ()) -> str:
    """The Milvus boolean expression of metadata filters (a key equals one of its values; every key
    must match), and of vids to leave out. Empty when there is nothing to filter."""
    clauses = []
    for key, values in (filters or {}).items():
        values = [values] if isinstance(values, str) else list(values)
        if not values:
            continue
        field = f"labels[{literal(str(key))}]"
        clauses.append("(" + " or ".join(f"{field} == {literal(str(v))}" for v in values) + ")")
    if exclude:
        clauses.append(f"vid not in [{', '.join(str(int(v)) for v in exclude)}]")
    return " and ".join(clauses)


def _labels(metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(metadata as the local store keeps it, the same with every value as text for filters)."""
    clean = json.loads(metadata_json(metadata))
    return clean, {k: str(v) for k, v in clean.items()}


def parse_index_spec(spec: str) -> tuple[str, dict[str, int]]:
    """``exact``/``flat``, ``hnsw[:M=..,efConstruction=..,ef=..]`` or ``ivf[:nlist=..,nprobe=..]`` ->
    (Milvus index type, parameters with defaults filled in)."""
    head, _, body = str(spec).strip().partition(":")
    head = head.strip().lower()
    kinds = {"exact": ("FLAT", {}), "flat": ("FLAT", {}), "hnsw": ("HNSW", HNSW_DEFAULTS),
             "ivf": ("IVF_FLAT", IVF_DEFAULTS)}
    if head not in kinds:
        raise IndexSpecError(f"bad index spec {spec!r} for a Milvus collection: use auto, exact, "
                             "hnsw[:M=32,efConstruction=200,ef=64] or ivf[:nlist=1024,nprobe=32]")
    kind, defaults = kinds[head]
    params = dict(defaults)
    by_lower = {k.lower(): k for k in defaults}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, _, value = part.partition("=")
        name = by_lower.get(key.strip().lower())
        if name is None or not value.strip().isdigit() or int(value) < 1:
            raise IndexSpecError(f"bad parameter {part!r} in index spec {spec!r} (known: {', '.join(defaults)})")
        params[name] = int(value)
    return kind, params


def _auto_to_milvus(local_spec: str) -> str:
    """The Milvus spec for what the local ``auto`` rule chose: exact search, or HNSW."""
    return {EXACT_SPEC: "exact", ANN_SPEC: "hnsw"}[local_spec]


class MilvusCollection(StoreSettings):
    """A vestis collection stored in Milvus (see the module docstring). Thread-safe."""

    searches_itself = True  # ranking runs in Milvus: callers pass queries to search_vectors

    def __init__(self, location: Location, client: Any) -> None:
        self.location = location
        self.path: Path = location.files  # side files (splits, attribute model, uploads)
        self.path.mkdir(parents=True, exist_ok=True)
        self._client = client
        self._lock = threading.RLock()
        self._generation = 0  # writes by this process: caches keyed by it are rebuilt after a write
        self._columns: tuple[int, dict[str, dict[str, int]]] | None = None
        self.settings = self._read_settings()
        if not self.settings:
            raise VestisError(f"no collection at {location} (create one with `vestis index SOURCE "
                              f"--collection {location}`)")
        self.dim = int(self.settings["dim"])
        self.colour_dim = int(self.settings.get("colour_dim", "0"))
        self._call("load the collection", self._client.load_collection, self._name)

    # ----------------------------------------------------------------- plumbing
    @property
    def _name(self) -> str:
        return self.location.name

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call Milvus; its failures become a VestisError naming the server and what failed."""
        try:
            return fn(*args, **kwargs)
        except VestisError:
            raise
        except Exception as e:  # noqa: BLE001 - pymilvus raises MilvusException and gRPC/OS errors
            raise VestisError(f"Milvus at {self.location.uri} could not {what}: {_message(e)}") from None

    def _write(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A write: on failure, say that what was committed before is kept and a re-run finishes."""
        try:
            return self._call(what, fn, *args, **kwargs)
        except VestisError as e:
            raise VestisError(f"{e}. Everything written before is kept; run the command again to finish") from None

    @staticmethod
    def _connect(location: Location) -> Any:
        pymilvus = _pymilvus()
        if location.kind == "milvus-lite":
            Path(location.uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            return pymilvus.MilvusClient(uri=location.uri, timeout=CONNECT_TIMEOUT_S, **milvus_credentials())
        except Exception as e:  # noqa: BLE001 - unreachable server, bad credentials, locked file
            raise VestisError(f"cannot connect to Milvus at {location.uri}: {_message(e)}") from None

    def _read_settings(self) -> dict[str, str]:
        name = self._name + SETTINGS
        if not self._call("list collections", self._client.has_collection, name):
            return {}
        self._call("load the settings", self._client.load_collection, name)
        rows = self._call("read the settings", self._client.query, name, filter='key != ""',
                          output_fields=["key", "value"], limit=16384)
        settings = {r["key"]: r["value"] for r in rows}
        return settings if "schema_version" in settings else {}

    # ----------------------------------------------------------------- opening
    @classmethod
    def exists(cls, location: str | Path | Location) -> bool:
        location = location if isinstance(location, Location) else parse_location(location)
        if location.kind == "milvus-lite" and not Path(location.uri).exists():
            return False
        client = cls._connect(location)
        try:
            return bool(cls.__new__(cls)._probe(location, client))
        finally:
            client.close()

    def _probe(self, location: Location, client: Any) -> dict[str, str]:
        self.location, self._client = location, client
        return self._read_settings()

    @classmethod
    def open(cls, location: str | Path | Location) -> MilvusCollection:
        location = location if isinstance(location, Location) else parse_location(location)
        if location.kind == "milvus-lite" and not Path(location.uri).exists():
            raise VestisError(f"no collection at {location} (create one with `vestis index SOURCE "
                              f"--collection {location}`)")
        client = cls._connect(location)
        try:
            return cls(location, client)
        except BaseException:
            client.close()
            raise

    @classmethod
    def create(
        cls,
        location: str | Path | Location,
        *,
        encoder_name: str,
        encoder_version: str,
        dim: int,
        colour_dim: int,
        colour_version: str = "",
        index_spec: str = "auto",
        encoder_source: str | None = None,
    ) -> MilvusCollection:
        """Create the Milvus collections of a new vestis collection; the settings are written last,
        so one interrupted half-way is not taken for a collection (and is recreated next time)."""
        location = location if isinstance(location, Location) else parse_location(location)
        if not is_auto(index_spec):
            parse_index_spec(index_spec)
        client = cls._connect(location)
        try:
            probe = cls.__new__(cls)
            if probe._probe(location, client):
                raise VestisError(f"{location} already holds a collection")
            pm = _pymilvus()
            call = probe._write
            for suffix in ("", SETTINGS, ATTRIBUTES):
                if call("list collections", client.has_collection, location.name + suffix):
                    call("drop a half-created collection", client.drop_collection, location.name + suffix)
            schema = pm.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", pm.DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
            schema.add_field("vid", pm.DataType.INT64)
            schema.add_field("source", pm.DataType.VARCHAR, max_length=MAX_SOURCE)
            schema.add_field("catalogue", pm.DataType.VARCHAR, max_length=MAX_TEXT)
            schema.add_field("stamp", pm.DataType.VARCHAR, max_length=MAX_TEXT)
            schema.add_field("hash", pm.DataType.VARCHAR, max_length=256)
            schema.add_field("metadata", pm.DataType.JSON)
            schema.add_field("labels", pm.DataType.JSON)
            schema.add_field("vector", pm.DataType.FLOAT_VECTOR, dim=dim)
            if colour_dim:
                schema.add_field("colour", pm.DataType.FLOAT_VECTOR, dim=colour_dim)
            index = client.prepare_index_params()
            index.add_index("vector", index_type="FLAT", metric_type="IP")
            if colour_dim:
                index.add_index("colour", index_type="FLAT", metric_type="IP")
            call("create the items collection", client.create_collection, location.name, schema=schema,
                 index_params=index, consistency_level="Strong")
            _create_key_value(client, location.name + SETTINGS, call)
            settings = {"schema_version": SCHEMA_VERSION, "index_active": "exact", **new_settings(
                encoder_name=encoder_name, encoder_version=encoder_version, encoder_source=encoder_source, dim=dim,
                colour_dim=colour_dim, colour_version=colour_version, index_spec=index_spec)}
            call("write the settings", client.upsert, location.name + SETTINGS,
                 [{"key": k, "value": v, "v": [0.0, 0.0]} for k, v in settings.items()])
            return cls(location, client)
        except BaseException:
            client.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._client.close()

    # ----------------------------------------------------------------- settings
    @property
    def active_index_spec(self) -> str:
        return self.settings.get("index_active", "exact")

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def set_setting(self, key: str, value: str) -> None:
        self.set_settings({key: value})

    def set_settings(self, values: dict[str, str]) -> None:
        with self._lock:
            self._write("write the settings", self._client.upsert, self._name + SETTINGS,
                        [{"key": k, "value": v, "v": [0.0, 0.0]} for k, v in values.items()])
            self.settings.update(values)

    # ----------------------------------------------------------------- reading items
    def _query(self, expr: str, fields: list[str], what: str = "read items", name: str | None = None
               ) -> Iterator[dict[str, Any]]:
        """Every row matching ``expr``, page by page."""
        iterator = self._call(what, self._client.query_iterator, name or self._name, batch_size=READ_ROWS,
                              filter=expr, output_fields=fields)
        try:
            while True:
                page = self._call(what, iterator.next)
                if not page:
                    return
                yield from page
        finally:
            iterator.close()

    def __len__(self) -> int:
        rows = self._call("count items", self._client.query, self._name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def __contains__(self, item_id: str) -> bool:
        return bool(self._call("read an item", self._client.get, self._name, ids=[item_id], output_fields=["vid"]))

    @staticmethod
    def _item(row: dict[str, Any]) -> Item:
        return Item(row["id"], int(row["vid"]), row["source"], dict(row["metadata"] or {}), row["hash"],
                    row["stamp"], row["catalogue"])

    def get(self, item_id: str) -> Item:
        rows = self._call("read an item", self._client.get, self._name, ids=[item_id], output_fields=ITEM_FIELDS)
        if not rows:
            raise NotFoundError(f"no item {item_id!r} in collection {self.location}")
        return self._item(rows[0])

    def items_by_vid(self, vids: Sequence[int]) -> list[Item]:
        """Items for the given vids, in the same order (missing vids are skipped)."""
        vids = [int(v) for v in vids]
        found: dict[int, Item] = {}
        for start in range(0, len(vids), READ_ROWS):
            chunk = vids[start : start + READ_ROWS]
            rows = self._call("read items", self._client.query, self._name,
                              filter=f"vid in [{', '.join(map(str, chunk))}]", output_fields=ITEM_FIELDS)
            found.update((int(r["vid"]), self._item(r)) for r in rows)
        return [found[v] for v in vids if v in found]

    def iter_items(self) -> Iterator[Item]:
        """All items in vid order."""
        yield from sorted((self._item(r) for r in self._query("", ITEM_FIELDS)), key=lambda it: it.vid)

    def stamps(self) -> dict[str, tuple[str, str, str, str]]:
        """id -> (stamp, hash, source, catalogue) for incremental indexing."""
        return {r["id"]: (r["stamp"], r["hash"], r["source"], r["catalogue"])
                for r in self._query("", ["id", "stamp", "hash", "source", "catalogue"])}

    def vector_of(self, item_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        fields = ["vector", "colour"] if self.colour_dim else ["vector"]
        rows = self._call("read an item", self._client.get, self._name, ids=[item_id], output_fields=fields)
        if not rows:
            raise NotFoundError(f"no item {item_id!r} in collection {self.location}")
        colour = np.asarray(rows[0]["colour"], np.float32) if self.colour_dim else None
        return np.asarray(rows[0]["vector"], np.float32), colour

    def table(self) -> VectorStore:
        """Every vector (and colour descriptor, as the extra columns) in memory, in vid order: for
        ``vestis eval``, which ranks all items exactly; searches run in Milvus."""
        rows = sorted(self._query("", ["vid", "vector", "colour"] if self.colour_dim else ["vid", "vector"]),
                      key=lambda r: int(r["vid"]))
        ids = np.array([int(r["vid"]) for r in rows], np.int64)
        vectors = np.asarray([r["vector"] for r in rows], np.float32).reshape(len(rows), self.dim)
        colours = (np.asarray([r["colour"] for r in rows], np.float32).reshape(len(rows), self.colour_dim)
                   if self.colour_dim else None)
        return VectorStore(self.dim, vectors, ids, extra_dim=self.colour_dim, extra=colours)

    def page(self, offset: int, limit: int) -> list[Item]:
        """At most ``limit`` items after the first ``offset`` (in Milvus's scan order)."""
        out: list[Item] = []
        for n, row in enumerate(self._query("", ITEM_FIELDS)):
            if n >= offset + limit:
                break
            if n >= offset:
                out.append(self._item(row))
        return out

    def stored_vectors(self, item_id: str, content_hash: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The vectors of ``item_id`` if it still holds the content with ``content_hash`` (else None);
        one read, so a concurrent write cannot pair one content's hash with another's vectors."""
        fields = ["hash", "vector"] + (["colour"] if self.colour_dim else [])
        rows = self._call("read an item", self._client.get, self._name, ids=[item_id], output_fields=fields)
        if not rows or rows[0]["hash"] != content_hash:
            return None
        colour = np.asarray(rows[0]["colour"], np.float32) if self.colour_dim else None
        return np.asarray(rows[0]["vector"], np.float32), colour

    def _column_counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            if self._columns is None or self._columns[0] != self._generation:
                counts: dict[str, dict[str, int]] = {}
                for row in self._query("", ["labels"]):
                    for key, value in (row["labels"] or {}).items():
                        column = counts.setdefault(key, {})
                        column[value] = column.get(value, 0) + 1
                self._columns = (self._generation, counts)
            return self._columns[1]

    def metadata_columns(self, max_values: int = 50) -> dict[str, list[tuple[str, int]]]:
        """Each metadata key with its most frequent values and counts (for filters and the web page)."""
        return {key: sorted(values.items(), key=lambda vc: (-vc[1], vc[0]))[:max_values]
                for key, values in sorted(self._column_counts().items())}

    def filter_vids(self, filters: dict[str, Sequence[str]]) -> np.ndarray:
        """vids whose metadata matches every filter (evaluated by Milvus)."""
        return np.array(sorted(int(r["vid"]) for r in self._query(filter_expression(filters), ["vid"])), np.int64)

    # ----------------------------------------------------------------- searching
    def _search_params(self, limit: int) -> dict[str, Any]:
        kind, params = parse_index_spec(self.active_index_spec)
        if kind == "HNSW":
            return {"metric_type": "IP", "params": {"ef": max(params["ef"], limit)}}
        if kind == "IVF_FLAT":
            return {"metric_type": "IP", "params": {"nprobe": params["nprobe"]}}
        return {"metric_type": "IP", "params": {}}

    def search_vectors(
        self,
        vector: np.ndarray,
        want: int,
        *,
        filters: dict[str, Sequence[str]] | None = None,
        exclude: Sequence[int] = (),
        colour: np.ndarray | None = None,
        colour_weight: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """The ``want`` best items by inner product with ``vector`` (plus ``colour_weight`` x colour
        similarity, re-scored over the deep search's best candidates, as the local ANN path does),
        filtered in Milvus. Returns (vids, scores, number of eligible items)."""
        expr = filter_expression(filters, exclude)
        fetch = max(want * COLOUR_FETCH, 200) if colour_weight else want
        fetch = min(fetch, 16384)
        fields = ["vid", "colour"] if colour_weight else ["vid"]
        hits = self._call("search", self._client.search, self._name, data=[np.asarray(vector, np.float32).tolist()],
                          anns_field="vector", limit=fetch, filter=expr, output_fields=fields,
                          search_params=self._search_params(fetch))[0]
        vids = np.array([int(h["entity"]["vid"]) for h in hits], np.int64)
        scores = np.array([float(h["distance"]) for h in hits], np.float32)
        if colour_weight and len(hits):
            colours = np.asarray([h["entity"]["colour"] for h in hits], np.float32)
            scores = scores + colour_weight * (colours @ np.asarray(colour, np.float32))
            order = np.lexsort((np.arange(len(scores)), -scores))
            vids, scores = vids[order], scores[order]
        return vids[:want], scores[:want], self._count(expr)

    def _count(self, expr: str, name: str | None = None) -> int:
        rows = self._call("count items", self._client.query, name or self._name, filter=expr,
                          output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    # ----------------------------------------------------------------- writing
    def _vids_of(self, ids: Sequence[str]) -> list[int]:
        vids = []
        for start in range(0, len(ids), READ_ROWS):
            rows = self._call("read items", self._client.get, self._name, ids=list(ids[start : start + READ_ROWS]),
                              output_fields=["vid"])
            vids += [int(r["vid"]) for r in rows]
        return vids

    def upsert(self, items: Sequence[NewItem]) -> list[int]:
        """Insert items (replacing any with the same id) in one upsert request; returns their vids."""
        if not items:
            return []
        for it in items:
            if it.vector.shape != (self.dim,):
                raise VestisError(f"item {it.id}: vector has shape {it.vector.shape}, collection dim is {self.dim}")
            if len(it.id.encode()) > MAX_ID or len(it.source.encode()) > MAX_SOURCE:
                raise VestisError(f"item {it.id[:80]!r}: id or source is too long for Milvus")
        with self._lock:
            replaced = self._vids_of([it.id for it in items])
            rows, vids = [], []
            for it in items:
                vid = secrets.randbits(63)
                metadata, labels = _labels(it.metadata)
                row = {"id": it.id, "vid": vid, "source": it.source, "catalogue": it.catalogue, "stamp": it.stamp,
                       "hash": it.hash, "metadata": metadata, "labels": labels,
                       "vector": np.asarray(it.vector, np.float32).tolist()}
                if self.colour_dim:
                    colour = np.zeros(self.colour_dim, np.float32) if it.colour is None else it.colour
                    row["colour"] = np.asarray(colour, np.float32).tolist()
                rows.append(row)
                vids.append(vid)
            for start in range(0, len(rows), WRITE_ROWS):
                self._write("write items", self._client.upsert, self._name, rows[start : start + WRITE_ROWS])
            self._generation += 1
            self._forget_attributes(replaced)
        return vids

    def _rewrite(self, ids: Sequence[str], change: Callable[[dict[str, Any]], None], what: str) -> None:
        """Read whole rows, change them, write them back (Milvus upserts whole rows)."""
        fields = ["id", "vid", "source", "catalogue", "stamp", "hash", "metadata", "labels", "vector"]
        fields += ["colour"] if self.colour_dim else []
        with self._lock:
            for start in range(0, len(ids), WRITE_ROWS):
                rows = self._call("read items", self._client.get, self._name, ids=list(ids[start : start + WRITE_ROWS]),
                                  output_fields=fields)
                for row in rows:
                    change(row)
                if rows:
                    self._write(what, self._client.upsert, self._name, rows)
            self._generation += 1

    def update_stamps(self, stamps: Sequence[tuple[str, str]]) -> None:
        """Record new change stamps for items whose content did not change (no re-embedding)."""
        new = dict(stamps)
        self._rewrite(list(new), lambda row: row.update(stamp=new[row["id"]]), "write change stamps")

    def update_metadata(self, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        new = {item_id: _labels(metadata) for item_id, metadata in updates}

        def change(row: dict[str, Any]) -> None:
            row["metadata"], row["labels"] = new[row["id"]]

        self._rewrite(list(new), change, "write metadata")
        attributes = self.open_attributes()
        if attributes is not None:
            attributes.relabel({item_id: labels for item_id, (_m, labels) in new.items()})

    def remove(self, item_ids: Sequence[str]) -> int:
        """Remove items by id; unknown ids are ignored. Returns how many were removed."""
        with self._lock:
            vids = self._vids_of(list(item_ids))
            ids = list(item_ids)
            for start in range(0, len(ids), READ_ROWS):
                self._write("remove items", self._client.delete, self._name, ids=ids[start : start + READ_ROWS])
            self._generation += 1
            self._forget_attributes(vids)
        return len(vids)

    def _forget_attributes(self, vids: list[int]) -> None:
        name = self._name + ATTRIBUTES
        if vids and "attribute_model_version" in self.settings:
            for start in range(0, len(vids), READ_ROWS):
                self._write("remove attribute vectors", self._client.delete, name, ids=vids[start : start + READ_ROWS])

    # ----------------------------------------------------------------- index and persistence
    def set_index_spec(self, spec: str) -> None:
        """Use another index (auto, exact, hnsw, ivf): rebuilt now by Milvus."""
        if not is_auto(spec):
            parse_index_spec(spec)
        self.set_setting("index_spec", spec)
        self._apply_index()

    def _wanted_index(self) -> str:
        if not is_auto(self.index_spec):
            return self.index_spec
        current = {"exact": EXACT_SPEC, "hnsw": ANN_SPEC}.get(self.active_index_spec)
        return _auto_to_milvus(choose_index(len(self), self.dim, current))

    def _apply_index(self) -> None:
        wanted = self._wanted_index()
        if wanted == self.active_index_spec:
            return
        kind, params = parse_index_spec(wanted)
        build = {k: v for k, v in params.items() if k not in ("ef", "nprobe")}
        with self._lock:
            c = self._client
            self._write("release the collection", c.release_collection, self._name)
            self._write("drop the old index", c.drop_index, self._name, "vector")
            index = c.prepare_index_params()
            index.add_index("vector", index_type=kind, metric_type="IP", params=build)
            self._write(f"build the {kind} index", c.create_index, self._name, index)
            self._write("load the collection", c.load_collection, self._name)
            self.set_setting("index_active", wanted)

    def persist(self) -> None:
        """Flush written rows to Milvus's storage and move to the index ``auto`` chooses now."""
        with self._lock:
            self._write("flush", self._client.flush, self._name)
            self._apply_index()

    def save_cache(self) -> None:
        """Nothing to cache locally: Milvus holds the vectors."""

    # ----------------------------------------------------------------- attributes
    def open_attributes(self) -> MilvusAttributes | None:
        """The attribute vectors of this collection, or None when it has no attribute model."""
        if not self.settings.get("attribute_model_version"):
            return None
        return MilvusAttributes(self)

    def configure_attributes(self, model: Any, *, rebuild: bool = False) -> MilvusAttributes:
        """The attribute vectors for ``model`` (created, or dropped and recreated for another model
        when ``rebuild``); see :meth:`vestis.store.attribute_index.AttributeIndex.configure`."""
        from vestis.store.attribute_index import _install_model

        self.check_encoder(model.backbone.version)
        current = self.settings.get("attribute_model_version", "")
        if current and current != model.version and not rebuild:
            raise EncoderMismatchError(
                f"the attributes of {self.location} were embedded with {current}; "
                f"{model.path.name} is {model.version}. Rebuild them with --rebuild"
            )
        if current != model.version:
            pm = _pymilvus()
            name = self._name + ATTRIBUTES
            with self._lock:
                self.path.mkdir(parents=True, exist_ok=True)
                installed = _install_model(model.path, self.path)
                if self._call("list collections", self._client.has_collection, name):
                    self._write("drop old attribute vectors", self._client.drop_collection, name)
                schema = pm.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("vid", pm.DataType.INT64, is_primary=True)
                schema.add_field("id", pm.DataType.VARCHAR, max_length=MAX_ID)
                schema.add_field("labels", pm.DataType.JSON)
                schema.add_field("vector", pm.DataType.FLOAT_VECTOR,
                                 dim=len(model.attributes) * model.dim + self.colour_dim)
                index = self._client.prepare_index_params()
                index.add_index("vector", index_type="FLAT", metric_type="IP")
                self._write("create the attribute collection", self._client.create_collection, name,
                            schema=schema, index_params=index, consistency_level="Strong")
                self.set_settings({
                    "attribute_model": installed,
                    "attribute_model_version": model.version,
                    "attribute_names": json.dumps(model.attributes),
                    "attribute_dim": str(model.dim),
                })
        return MilvusAttributes(self)

    # ----------------------------------------------------------------- summary
    def info(self) -> dict[str, Any]:
        catalogues: dict[str, int] = {}
        for row in self._query("", ["catalogue"]):
            catalogues[row["catalogue"]] = catalogues.get(row["catalogue"], 0) + 1
        disk = None  # a server's storage is not ours to measure
        if self.location.kind == "milvus-lite":
            disk = sum(p.stat().st_size for p in Path(self.location.uri).rglob("*") if p.is_file())
        kind, params = parse_index_spec(self.active_index_spec)
        return {
            "path": str(self.location),
            "store": self.location.kind,
            "items": sum(catalogues.values()),
            "encoder": self.encoder_name,
            "encoder_version": self.encoder_version,
            "encoder_source": self.encoder_source,
            "dim": self.dim,
            "colour_dim": self.colour_dim,
            "index": f"milvus {kind} (inner product){' ' + json.dumps(params) if params else ''}",
            "index_choice": (f"auto: exact (FLAT) up to {exact_limit(self.dim):,} items at dim {self.dim}, "
                             "then HNSW" if is_auto(self.index_spec) else "explicit"),
            "generation": self._generation,
            "catalogues": [{"catalogue": c, "items": n} for c, n in sorted(catalogues.items())],
            "disk_bytes": disk,
            "metadata_columns": sorted(self._column_counts()),
        }


class MilvusAttributes:
    """The attribute vectors of a Milvus collection: the surface of
    :class:`vestis.store.attribute_index.AttributeIndex` that building and searching use."""

    def __init__(self, collection: MilvusCollection) -> None:
        self.collection = collection
        settings = collection.settings
        self.model_path = settings.get("attribute_model", "")
        self.model_version = settings.get("attribute_model_version", "")
        self.attributes: list[str] = json.loads(settings.get("attribute_names", "[]"))
        self.dim = int(settings.get("attribute_dim", "0"))
        self._name = collection.location.name + ATTRIBUTES
        collection._call("load the attribute vectors", collection._client.load_collection, self._name)

    @property
    def lock(self) -> threading.RLock:
        return self.collection.lock

    def check_model(self, model: Any) -> None:
        if model.version != self.model_version:
            raise EncoderMismatchError(
                f"the attributes of {self.collection.location} were embedded with {self.model_version}, "
                f"not {model.version}; search with that model or rebuild: vestis attributes build --rebuild"
            )

    def load_model(self, threads: int | None = None, backbone: Any = None) -> Any:
        from vestis.encoders.attribute_encoder import AttributeEncoder

        model = AttributeEncoder(self.collection.path / self.model_path, threads=threads, backbone=backbone)
        self.check_model(model)
        return model

    def _vids(self) -> set[int]:
        return {int(r["vid"]) for r in self.collection._query("", ["vid"], "read attribute vectors", self._name)}

    def missing(self) -> list[tuple[int, str, str, str]]:
        """(vid, id, source, content hash) of the items that have no attribute vectors yet."""
        done = self._vids()
        rows = self.collection._query("", ["vid", "id", "source", "hash"])
        return sorted((int(r["vid"]), r["id"], r["source"], r["hash"]) for r in rows if int(r["vid"]) not in done)

    def add(self, vids: np.ndarray, vectors: np.ndarray) -> int:
        """Store the vectors (len(vids) x attributes x dim) of items in one upsert; items that left
        the collection meanwhile are skipped. Returns how many items were written."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape[1:] != (len(self.attributes), self.dim) or len(vectors) != len(vids):
            raise VestisError(f"attribute vectors must be {len(vids)} x {len(self.attributes)} x {self.dim}, "
                              f"got {vectors.shape}")
        coll = self.collection
        fields = ["vid", "id", "labels"] + (["colour"] if coll.colour_dim else [])
        rows = {}
        for start in range(0, len(vids), READ_ROWS):
            chunk = [int(v) for v in vids[start : start + READ_ROWS]]
            found = coll._call("read items", coll._client.query, coll._name,
                               filter=f"vid in [{', '.join(map(str, chunk))}]", output_fields=fields)
            rows.update((int(r["vid"]), r) for r in found)
        out = []
        for vid, per_attribute in zip(np.asarray(vids).tolist(), vectors):
            row = rows.get(int(vid))
            if row is None:
                continue
            parts = [per_attribute.reshape(-1)] + ([np.asarray(row["colour"], np.float32)] if coll.colour_dim else [])
            out.append({"vid": int(vid), "id": row["id"], "labels": row["labels"],
                        "vector": np.concatenate(parts).tolist()})
        for start in range(0, len(out), WRITE_ROWS):
            coll._write("write attribute vectors", coll._client.upsert, self._name, out[start : start + WRITE_ROWS])
        return len(out)

    def relabel(self, labels: dict[str, dict[str, str]]) -> None:
        """Copy new labels of items onto their attribute rows (filters run on them)."""
        coll = self.collection
        ids = list(labels)
        for start in range(0, len(ids), READ_ROWS):
            chunk = ids[start : start + READ_ROWS]
            expr = "id in [" + ", ".join(literal(i) for i in chunk) + "]"
            rows = coll._call("read attribute vectors", coll._client.query, self._name, filter=expr,
                              output_fields=["vid", "id", "labels", "vector"])
            for row in rows:
                row["labels"] = labels[row["id"]]
            if rows:
                coll._write("write attribute labels", coll._client.upsert, self._name, rows)

    def stored_vectors(self, vid: int) -> np.ndarray | None:
        """The stored attribute vectors (attributes x dim) of one item; None when it has none yet."""
        coll = self.collection
        rows = coll._call("read attribute vectors", coll._client.get, self._name, ids=[int(vid)],
                          output_fields=["vector"])
        if not rows:
            return None
        n = len(self.attributes) * self.dim
        return np.asarray(rows[0]["vector"][:n], np.float32).reshape(len(self.attributes), self.dim)

    def search_weighted(
        self, query: np.ndarray, want: int, *, filters: dict[str, Sequence[str]] | None = None,
        exclude: Sequence[int] = (),
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Items by inner product with ``query`` (each attribute's weighted query vector side by
        side, then the weighted colour descriptor), filtered in Milvus: (vids, scores, eligible)."""
        coll = self.collection
        expr = filter_expression(filters, exclude)
        hits = coll._call("search attribute vectors", coll._client.search, self._name,
                          data=[np.asarray(query, np.float32).tolist()], anns_field="vector", limit=min(want, 16384),
                          filter=expr, output_fields=["vid"], search_params={"metric_type": "IP", "params": {}})[0]
        return (np.array([int(h["entity"]["vid"]) for h in hits], np.int64),
                np.array([float(h["distance"]) for h in hits], np.float32), coll._count(expr, self._name))

    def table(self) -> None:
        """Nothing to load: the vectors stay in Milvus."""

    def save(self) -> None:
        """Flush the attribute vectors to Milvus's storage."""
        coll = self.collection
        coll._write("flush", coll._client.flush, self._name)

    def info(self) -> dict[str, object]:
        return {
            "attribute_model": self.model_path,
            "attribute_model_version": self.model_version,
            "attributes": self.attributes,
            "dim": self.dim,
            "items_embedded": self.collection._count("", self._name),
            "items": len(self.collection),
        }


def _create_key_value(client: Any, name: str, call: Callable[..., Any]) -> None:
    """A key -> value collection (Milvus wants a vector field in every collection: a 2-d dummy)."""
    pm = _pymilvus()
    schema = pm.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", pm.DataType.VARCHAR, is_primary=True, max_length=256)
    schema.add_field("value", pm.DataType.VARCHAR, max_length=MAX_SOURCE)
    schema.add_field("v", pm.DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("v", index_type="FLAT", metric_type="L2")
    call("create the settings collection", client.create_collection, name, schema=schema, index_params=index,
         consistency_level="Strong")


def _message(error: Exception) -> str:
    return (getattr(error, "message", "") or str(error) or type(error).__name__).strip()

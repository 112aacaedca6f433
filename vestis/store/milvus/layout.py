"""How a vestis collection NAME is laid out in Milvus collections, and its index specs.

::

    NAME              one row per item: id (primary key), vid, source, catalogue, stamp, hash,
                      metadata (JSON, as given), labels (JSON, every value as text: what filters
                      match), vector (the global embedding), and colour (the colour descriptor)
                      where the server keeps several vector fields in one collection
    NAME__colour      only on servers with one vector field per collection (before Milvus 2.4):
                      id (primary key, the item's), colour
    NAME__settings    key -> value: encoder, dims, index spec, generation, per-item vector models
    NAME__attributes  (and NAME__joint): per-item vectors, see :mod:`.item_vectors`

After a ``vestis reindex`` NAME is an alias of the physical collection ``NAME__rK`` holding the
vectors of the encoder in use (:mod:`.reindex`); the settings of each physical collection's vectors
are keyed by its name (:data:`PER_PHYSICAL`).

The layout is chosen when the collection is created and kept in its settings (``layout``:
``one`` collection for both vectors, or ``split``), so a newer server goes on reading a
collection made on an older one. Index specs follow the grammar of :mod:`vestis.index`
(``NAME[:key=value,...]``, parsed by the same :func:`~vestis.index.backend.parse_params`), with
the parameter names of the local backends: ``exact``/``flat``, ``hnsw:M=32,efConstruction=200,
efSearch=64``, ``ivf:nlist=1024,nprobe=32``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from vestis.errors import IndexSpecError
from vestis.index.auto import ANN_SPEC, EXACT_SPEC, choose_index
from vestis.index.backend import Param, Params, parse_params
from vestis.store.milvus.connection import QUERY_CONSISTENCY, MilvusConnection

SCHEMA_VERSION = "1"
SETTINGS, COLOUR = "__settings", "__colour"
ONE, SPLIT = "one", "split"  # the layouts: colour beside the vector in NAME, or in NAME__colour
MAX_ID, MAX_SOURCE, MAX_TEXT = 1024, 65535, 4096
ITEM_FIELDS = ["id", "vid", "source", "metadata", "hash", "stamp", "catalogue"]
ITEM_SCHEMA = [
    ("id", "VARCHAR", {"max_length": MAX_ID}),
    ("vid", "INT64", {}),
    ("source", "VARCHAR", {"max_length": MAX_SOURCE}),
    ("catalogue", "VARCHAR", {"max_length": MAX_TEXT}),
    ("stamp", "VARCHAR", {"max_length": MAX_TEXT}),
    ("hash", "VARCHAR", {"max_length": 256}),
    ("metadata", "JSON", {}),
    ("labels", "JSON", {}),
]

# Milvus index types by spec name, with their parameters (search-time ones marked).
SPECS: dict[str, tuple[str, dict[str, Param]]] = {
    "exact": ("FLAT", {}),
    "flat": ("FLAT", {}),
    "hnsw": ("HNSW", {"M": Param(32, 2), "efConstruction": Param(200, 1), "efSearch": Param(64, 1, search=True)}),
    "ivf": ("IVF_FLAT", {"nlist": Param(1024, 1), "nprobe": Param(32, 1, search=True)}),
}


def parse_index_spec(spec: str) -> tuple[str, Params]:
    """``exact``, ``hnsw[:M=..,efConstruction=..,efSearch=..]`` or ``ivf[:nlist=..,nprobe=..]`` ->
    (Milvus index type, parameters with defaults filled in)."""
    head, _, body = str(spec).strip().partition(":")
    head = head.strip().lower()
    if head not in SPECS:
        raise IndexSpecError(f"bad index spec {spec!r} for a Milvus collection: use auto, exact, "
                             "hnsw[:M=32,efConstruction=200,efSearch=64] or ivf[:nlist=1024,nprobe=32]")
    kind, schema = SPECS[head]
    try:
        return kind, parse_params(body, schema, f"Milvus {head}")
    except IndexSpecError as error:
        raise IndexSpecError(f"bad index spec {spec!r}: {error}") from None


def build_params(spec: str) -> tuple[str, Params]:
    """(Milvus index type, the parameters its build takes) of ``spec``."""
    kind, params = parse_index_spec(spec)
    schema = SPECS[str(spec).strip().partition(":")[0].strip().lower()][1]
    return kind, {k: v for k, v in params.items() if not schema[k].search}


def search_params(spec: str, limit: int) -> dict[str, Any]:
    """Milvus search parameters for a query of ``limit`` results on an index built from ``spec``."""
    kind, params = parse_index_spec(spec)
    if kind == "HNSW":
        return {"metric_type": "IP", "params": {"ef": max(int(params["efSearch"] or 0), limit)}}
    if kind == "IVF_FLAT":
        return {"metric_type": "IP", "params": {"nprobe": params["nprobe"]}}
    return {"metric_type": "IP", "params": {}}


def auto_index(n: int, dim: int, active: str) -> str:
    """What the local ``auto`` rule chooses for ``n`` items, as a Milvus spec: exact, or hnsw."""
    current = {"exact": EXACT_SPEC, "hnsw": ANN_SPEC}.get(active)
    return {EXACT_SPEC: "exact", ANN_SPEC: "hnsw"}[choose_index(n, dim, current)]


def new_generation() -> int:
    """A change stamp no other write by any process has taken (microseconds since the epoch,
    then 10 random bits): caches keyed by it are rebuilt after every write, whoever made it."""
    return (time.time_ns() // 1000) << 10 | secrets.randbits(10)


# The settings of the vectors in one physical items collection, kept as KEY@PHYSICAL so that moving
# the alias NAME to another physical collection switches them with its vectors (``vestis reindex``);
# a collection made before aliases holds them unsuffixed, for its physical collection NAME.
PER_PHYSICAL = ("encoder_name", "encoder_version", "encoder_source", "dim", "index_active")


def keyed(values: dict[str, str], physical: str) -> dict[str, str]:
    """``values`` as stored: the per-physical ones under KEY@``physical``."""
    return {f"{k}@{physical}" if k in PER_PHYSICAL else k: v for k, v in values.items()}


def settings_of(stored: dict[str, str], physical: str) -> dict[str, str]:
    """The settings of the collection whose alias stands for ``physical``, from every stored one."""
    out = {k: v for k, v in stored.items() if "@" not in k}
    out.update({k.partition("@")[0]: v for k, v in stored.items() if k.partition("@")[2] == physical})
    return out


class Settings:
    """The key -> value collection NAME__settings (Milvus wants a vector in every collection: a
    2-d dummy)."""

    def __init__(self, db: MilvusConnection, name: str) -> None:
        self.db, self.name = db, name + SETTINGS

    def create(self) -> None:
        self.db.create(self.name, [("key", "VARCHAR", {"max_length": 256}),
                                   ("value", "VARCHAR", {"max_length": MAX_SOURCE})],
                       {"v": 2}, "create the settings collection", metric="L2")

    def read(self) -> dict[str, str]:
        """Every setting; empty when there is no (complete) collection."""
        if not self.db.has(self.name):
            return {}
        self.db.load(self.name)
        rows = self.db.call("read the settings", self.db.client.query, self.name, filter='key != ""',
                            output_fields=["key", "value"], limit=16384)
        settings = {r["key"]: r["value"] for r in rows}
        return settings if "schema_version" in settings else {}

    def value(self, key: str) -> str | None:
        """One setting now (at the query path's consistency: generations are read on every query)."""
        rows = self.db.call("read the settings", self.db.client.get, self.name, ids=[key], output_fields=["value"],
                            consistency_level=QUERY_CONSISTENCY)
        return rows[0]["value"] if rows else None

    def write(self, values: dict[str, str]) -> None:
        self.db.upsert(self.name, [{"key": k, "value": v, "v": [0.0, 0.0]} for k, v in values.items()],
                       "write the settings")


def create_layout(db: MilvusConnection, name: str, dim: int, colour_dim: int, others: list[str],
                  settings: dict[str, str]) -> None:
    """The Milvus collections of a new vestis collection ``name``, in the layout the server takes;
    what an interrupted creation left (``others``: suffixes of per-item vector collections) is
    dropped first, and the settings are written last, so a half-created collection is not taken
    for one (and is created again next time)."""
    for suffix in ("", COLOUR, SETTINGS, *others):
        db.drop(name + suffix, "drop a half-created collection")
    layout = ONE if db.multi_vector else SPLIT
    vectors = {"vector": dim}
    if colour_dim and layout == ONE:
        vectors["colour"] = colour_dim
    db.create(name, ITEM_SCHEMA, vectors, "create the items collection")
    if colour_dim and layout == SPLIT:
        db.create(name + COLOUR, [("id", "VARCHAR", {"max_length": MAX_ID})], {"colour": colour_dim},
                  "create the colour collection")
    store = Settings(db, name)
    store.create()
    store.write({"schema_version": SCHEMA_VERSION, "index_active": "exact", "layout": layout,
                 "generation": str(new_generation()), **settings})

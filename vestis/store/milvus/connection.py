"""One connection to Milvus for one vestis collection: every call's failure becomes a
:class:`~vestis.errors.VestisError` naming the server and what failed, reads come page by page,
and what the server can do (several vector fields per collection) is asked once.

pymilvus and Milvus Lite log what they also raise, with tracebacks: those records are dropped at
their loggers, and the raised error is reported once, in words.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from vestis.errors import VestisError
from vestis.locks import collection_lock
from vestis.store.location import Location, milvus_credentials

T = TypeVar("T")

READ_ROWS = 1000  # rows per query page / ids per `in` list
WRITE_ROWS = 256  # rows per upsert request (far below Milvus's 64 MB request limit at 1280-d)
CONNECT_TIMEOUT_S = 10
# What the query path (a search, its count, fetching its hits) reads at: Milvus's Session level sees
# this process's own writes at once and other processes' within about a time tick (200 ms by
# default), where Strong (every other read: counts, stamps, settings) waits for a time tick on
# every request: about 200 ms each on a Milvus 2.3 standalone (benchmarks/results/milvus-server.md).
QUERY_CONSISTENCY = "Session"
MULTI_VECTOR_SINCE = (2, 4)  # Milvus 2.4 added several vector fields per collection
LITE_LOCK = "LOCK"  # the file Milvus Lite locks in its database folder while a process holds it


class _AllocTimestampNoise(logging.Filter):
    """Milvus Lite serves pymilvus's query iterator without ``AllocTimestamp``: the iterator falls
    back to a client-side timestamp and works, but Lite's in-process gRPC server logs a traceback
    for each call first. Only that record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, NotImplementedError) and record.name == "grpc._server")


def pymilvus() -> Any:
    """The pymilvus module, or a clear error naming the extra to install."""
    try:
        import pymilvus as module
    except ImportError:
        raise VestisError("a Milvus collection needs pymilvus: pip install 'vestis[milvus]'") from None
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # its RPC errors come back as VestisErrors
    logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)  # likewise: a failed start is raised
    grpc_server = logging.getLogger("grpc._server")
    if not any(isinstance(f, _AllocTimestampNoise) for f in grpc_server.filters):
        grpc_server.addFilter(_AllocTimestampNoise())
    return module


def message(error: Exception) -> str:
    """The words of a pymilvus/gRPC error (its ``message`` where it has one)."""
    return (getattr(error, "message", "") or str(error) or type(error).__name__).strip()


def lite_holder(database: Path) -> str | None:
    """Which process holds the lock of the Milvus Lite database folder ``database`` ("process PID
    (COMMAND)"), from /proc/locks; None when no process does or it cannot be told."""
    try:
        inode = (database / LITE_LOCK).stat().st_ino
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in locks:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = fields[4]
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                command = ""
            return f"process {pid}" + (f" ({command[:120]})" if command else "")
    return None


class MilvusConnection:
    """A pymilvus ``MilvusClient`` for the collection at ``location``, with its errors in words.
    ``lock`` serialises this process's writes (reads need none: Milvus is consistent)."""

    def __init__(self, location: Location, client: Any) -> None:
        self.location = location
        self.client = client
        self.lock = collection_lock(f"milvus {location}")
        self._multi_vector: bool | None = None

    @classmethod
    def connect(cls, location: Location) -> MilvusConnection:
        module = pymilvus()
        if location.kind == "milvus-lite":
            Path(location.uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            client = module.MilvusClient(uri=location.uri, timeout=CONNECT_TIMEOUT_S, **milvus_credentials())
        except Exception as e:  # noqa: BLE001 - unreachable server, bad credentials, locked file
            if location.kind == "milvus-lite" and (holder := lite_holder(Path(location.uri))):
                raise VestisError(
                    f"another process holds the Milvus Lite database {location.uri}: {holder}. Milvus Lite "
                    "admits one process at a time: stop that one (a `vestis serve`?) first, or put the "
                    "collection on a Milvus server (milvus://HOST:PORT/NAME) to share it") from None
            raise VestisError(f"cannot connect to Milvus at {location.uri}: {message(e)}") from None
        return cls(location, client)

    def close(self) -> None:
        with self.lock:
            self.client.close()

    # ----------------------------------------------------------------- calls
    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call Milvus; its failures become a VestisError naming the server and what failed."""
        try:
            return fn(*args, **kwargs)
        except VestisError:
            raise
        except Exception as e:  # noqa: BLE001 - pymilvus raises MilvusException and gRPC/OS errors
            raise VestisError(f"Milvus at {self.location.uri} could not {what}: {message(e)}") from None

    def write(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A write: on failure, say that what was committed before is kept and a re-run finishes."""
        try:
            return self.call(what, fn, *args, **kwargs)
        except VestisError as e:
            raise VestisError(f"{e}. Everything written before is kept; run the command again to finish") from None

    def has(self, name: str) -> bool:
        return self.call("list collections", self.client.has_collection, name)

    def physical(self, name: str) -> str:
        """The collection the alias ``name`` stands for, or ``name`` when it is no alias (a
        collection, or none: the calls that follow say what is wrong)."""
        try:
            return str(self.call("resolve an alias", self.client.describe_alias, name)["collection_name"])
        except VestisError:
            return name

    def create_alias(self, alias: str, target: str) -> None:
        self.write("create an alias", self.client.create_alias, target, alias)

    def move_alias(self, alias: str, target: str) -> None:
        """Make ``alias`` stand for the collection ``target`` instead, in one step."""
        self.write("switch an alias", self.client.alter_alias, target, alias)

    def load(self, name: str) -> None:
        self.call("load a collection", self.client.load_collection, name)

    def drop(self, name: str, what: str = "drop a collection") -> None:
        if self.has(name):
            self.write(what, self.client.drop_collection, name)

    def flush(self, name: str) -> None:
        self.write("flush", self.client.flush, name)

    def upsert(self, name: str, rows: list[dict[str, Any]], what: str) -> None:
        """Write ``rows``, WRITE_ROWS per request (each request all or nothing)."""
        for start in range(0, len(rows), WRITE_ROWS):
            self.write(what, self.client.upsert, name, rows[start : start + WRITE_ROWS])

    def delete(self, name: str, keys: list[Any], what: str) -> None:
        for start in range(0, len(keys), READ_ROWS):
            self.write(what, self.client.delete, name, ids=keys[start : start + READ_ROWS])

    def get(self, name: str, keys: list[Any], fields: list[str], what: str = "read items") -> list[dict[str, Any]]:
        """The rows of the primary keys ``keys`` (unknown keys skipped)."""
        rows: list[dict[str, Any]] = []
        for start in range(0, len(keys), READ_ROWS):
            rows += self.call(what, self.client.get, name, ids=keys[start : start + READ_ROWS], output_fields=fields)
        return rows

    def query(self, name: str, expr: str, fields: list[str], what: str = "read items") -> Iterator[dict[str, Any]]:
        """Every row of ``name`` matching ``expr``, page by page."""
        iterator = self.call(what, self.client.query_iterator, name, batch_size=READ_ROWS, filter=expr,
                             output_fields=fields)
        try:
            while True:
                page = self.call(what, iterator.next)
                if not page:
                    return
                yield from page
        finally:
            iterator.close()

    def count(self, name: str, expr: str = "", consistency: str = "Strong") -> int:
        rows = self.call("count items", self.client.query, name, filter=expr, output_fields=["count(*)"],
                         consistency_level=consistency)
        return int(rows[0]["count(*)"])

    def search(self, name: str, vectors: list[Any], limit: int, expr: str, fields: list[str],
               params: dict[str, Any], what: str = "search") -> list[list[dict[str, Any]]]:
        """For each of ``vectors``, the ``limit`` best rows of ``name`` by ``params``'s metric,
        filtered by ``expr`` (at the query path's consistency)."""
        return list(self.call(what, self.client.search, name, data=vectors, anns_field="vector", limit=limit,
                              filter=expr, output_fields=fields, search_params=params,
                              consistency_level=QUERY_CONSISTENCY))

    def create(self, name: str, fields: list[tuple[str, str, dict[str, Any]]], vectors: dict[str, int],
               what: str, metric: str = "IP") -> None:
        """Create collection ``name`` with scalar ``fields`` (name, pymilvus DataType name, options;
        the first is the primary key) and the FLAT-indexed float vector fields ``vectors`` (name -> dim)."""
        pm = pymilvus()
        schema = pm.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        for n, (field, kind, options) in enumerate(fields):
            schema.add_field(field, getattr(pm.DataType, kind), is_primary=n == 0, **options)
        index = self.client.prepare_index_params()
        for field, dim in vectors.items():
            schema.add_field(field, pm.DataType.FLOAT_VECTOR, dim=dim)
            index.add_index(field, index_type="FLAT", metric_type=metric)
        self.write(what, self.client.create_collection, name, schema=schema, index_params=index,
                   consistency_level="Strong")

    def rebuild_index(self, name: str, kind: str, params: dict[str, Any]) -> None:
        """Replace the index of ``name``'s ``vector`` field by a ``kind`` index built with ``params``."""
        c = self.client
        self.write("release the collection", c.release_collection, name)
        self.write("drop the old index", c.drop_index, name, "vector")
        index = c.prepare_index_params()
        index.add_index("vector", index_type=kind, metric_type="IP", params=params)
        self.write(f"build the {kind} index", c.create_index, name, index)
        self.write("load the collection", c.load_collection, name)

    # ----------------------------------------------------------------- what the server can do
    @property
    def json_in(self) -> bool:
        """Whether expressions may hold ``in`` on a JSON path (Milvus does; Milvus Lite does not)."""
        return self.location.kind != "milvus-lite"

    @property
    def multi_vector(self) -> bool:
        """Whether the server keeps several vector fields in one collection (Milvus 2.4 on; Milvus
        Lite does). ``VESTIS_MILVUS_ONE_VECTOR=1`` answers no on any server: the layout older
        servers need, which tests run on Milvus Lite too."""
        if os.environ.get("VESTIS_MILVUS_ONE_VECTOR", "") == "1":
            return False
        if self._multi_vector is None:
            version = str(self.call("read the server version", self.client.get_server_version))
            found = re.match(r"v?(\d+)\.(\d+)", version)
            self._multi_vector = (self.location.kind == "milvus-lite" or found is None
                                  or (int(found[1]), int(found[2])) >= MULTI_VECTOR_SINCE)
        return self._multi_vector


"""A collection as one Parquet file, and back (``vestis export`` / ``vestis import``).

One row per item: ``id``, ``source``, ``catalogue``, ``stamp``, ``hash``, ``vector`` (a fixed-size
list of float32, the collection's dimension), ``colour_descriptor`` (likewise; null where an item
has none), ``metadata`` (the labels as JSON, which is what an import reads) and one text column per
label key, for people and dataframes (``label_KEY`` for a key that is one of those names). The schema's metadata records the encoder
that made the vectors, so an import refuses vectors of another encoder than the collection's, and
a new collection made by an import searches with the same encoder. It loads straight into pandas
or polars (``pd.read_parquet``), LanceDB and Milvus bulk insert. Export then import is bit-exact.

The file is written aside and renamed into place, so a full disk or a kill leaves no half file;
an import checks the whole file (columns, vector lengths, finite values, unique ids) before it
writes anything.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.lazy import lazy_import
from vestis.store.db import NewItem
from vestis.store.factory import collection_exists, create_collection, open_collection
from vestis.store.protocol import CollectionStore

pa = lazy_import("pyarrow")
pq = lazy_import("pyarrow.parquet")

FORMAT = "vestis-items/1"
BATCH = 4096  # rows per Parquet row group, and per import transaction
REQUIRED = ("id", "source", "hash", "vector", "metadata")
COLOUR = "colour_descriptor"
OWN = {*REQUIRED, "catalogue", "stamp", COLOUR}
SETTINGS = ("encoder_name", "encoder_version", "encoder_source", "dim", "colour_dim", "colour_version", "index_spec")
MAX_ID = 1024


@dataclass
class TransferReport:
    items: int = 0
    path: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "path": self.path}


def _need_pyarrow() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise VestisError("export and import need pyarrow: pip install 'vestis[export]'") from None


def export_collection(collection: CollectionStore, out: Path,
                      progress: Callable[[int, int], None] | None = None) -> TransferReport:
    """Write every item of ``collection`` to the Parquet file ``out`` (see the module docstring)."""
    _need_pyarrow()
    with collection.lock:  # one generation: the items and their vectors agree
        items = list(collection.iter_items())
        vids, vectors, colours = collection.table().view
        rows = collection.table().rows_of(np.array([it.vid for it in items], np.int64))
    if np.any(rows < 0):
        raise VestisError("the collection's vectors and items disagree; re-run `vestis index` first")
    keys = sorted({key for it in items for key in it.metadata})
    schema = _schema(collection.dim, collection.colour_dim, keys, {s: collection.settings.get(s, "") for s in SETTINGS})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, len(items), BATCH):
                chunk, chunk_rows = items[start:start + BATCH], rows[start:start + BATCH]
                writer.write_table(_table(schema, chunk, np.asarray(vectors[chunk_rows], np.float32),
                                          np.asarray(colours[chunk_rows], np.float32) if collection.colour_dim else None,
                                          keys))
                if progress is not None:
                    progress(min(start + BATCH, len(items)), len(items))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the export is an ordinary file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return TransferReport(len(items), str(out))


def label_column(key: str) -> str:
    """The file's column of a label: its key, or ``label_KEY`` when the key is one of the file's own."""
    return f"label_{key}" if key in OWN or key.startswith("label_") else key


def _schema(dim: int, colour_dim: int, keys: list[str], settings: dict[str, str]) -> Any:
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("source", pa.string()),
              pa.field("catalogue", pa.string()), pa.field("stamp", pa.string()), pa.field("hash", pa.string()),
              pa.field("vector", pa.list_(pa.float32(), dim), nullable=False)]
    if colour_dim:
        fields.append(pa.field(COLOUR, pa.list_(pa.float32(), colour_dim)))
    fields += [pa.field("metadata", pa.string())] + [pa.field(label_column(k), pa.string()) for k in keys]
    return pa.schema(fields, metadata={"vestis": json.dumps({"format": FORMAT, **settings})})


def _table(schema: Any, items: list, vectors: np.ndarray, colours: np.ndarray | None, keys: list[str]) -> Any:
    columns: dict[str, Any] = {
        "id": [it.id for it in items], "source": [it.source for it in items],
        "catalogue": [it.catalogue for it in items], "stamp": [it.stamp for it in items],
        "hash": [it.hash for it in items],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
    }
    if colours is not None:
        columns[COLOUR] = pa.FixedSizeListArray.from_arrays(pa.array(colours.reshape(-1)), colours.shape[1])
    columns["metadata"] = [json.dumps(it.metadata, ensure_ascii=False, sort_keys=True) for it in items]
    for key in keys:
        columns[label_column(key)] = [None if key not in it.metadata else str(it.metadata[key]) for it in items]
    return pa.table(columns, schema=schema)


def import_collection(path: Path, location: str | Path,
                      progress: Callable[[int, int], None] | None = None) -> TransferReport:
    """Add the items of the Parquet file ``path`` (from :func:`export_collection`, or made the same
    way) to the collection at ``location``, created with the file's encoder settings when missing;
    no image is read and nothing is embedded. The whole file is checked first."""
    _need_pyarrow()
    path = Path(path)
    if not path.is_file():
        raise VestisError(f"no such file: {path}")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise VestisError(f"{path} is not a Parquet file: {e}") from None
    settings = _settings(parquet.schema_arrow, path)
    dim, colour_dim = int(settings["dim"]), int(settings["colour_dim"])
    ids = _check(parquet, path, dim, colour_dim)
    if collection_exists(location):
        collection = open_collection(location)
        collection.check_encoder(settings["encoder_version"])
        if collection.dim != dim or collection.colour_dim != colour_dim:
            collection.close()
            raise VestisError(f"{path} holds {dim}-d vectors (colour {colour_dim}); {location} holds "
                              f"{collection.dim}-d (colour {collection.colour_dim})")
        taken = [i for i in ids if i in collection]
        if taken:
            collection.close()
            raise VestisError(f"{len(taken)} id(s) of {path} are in {location} already, e.g. {taken[0]!r}: remove "
                              "them first, or import into a new collection")
    else:
        collection = create_collection(location, encoder_name=settings["encoder_name"],
                                       encoder_version=settings["encoder_version"],
                                       encoder_source=settings["encoder_source"] or None, dim=dim,
                                       colour_dim=colour_dim, colour_version=settings["colour_version"],
                                       index_spec=settings["index_spec"] or "auto")
    done = 0
    with collection:
        for batch in _batches(parquet, colour_dim):
            collection.upsert(batch)
            done += len(batch)
            if progress is not None:
                progress(done, len(ids))
        collection.persist()
    return TransferReport(done, str(location))


def _settings(schema: Any, path: Path) -> dict[str, str]:
    raw = (schema.metadata or {}).get(b"vestis")
    try:
        settings = json.loads(raw) if raw else None
    except ValueError:
        settings = None
    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise VestisError(f"{path} is not a vestis export (its schema has no {FORMAT!r} metadata: "
                          "make it with `vestis export`)")
    missing = [s for s in ("encoder_name", "encoder_version", "dim", "colour_dim") if not settings.get(s)
               and settings.get(s) != 0]
    if missing:
        raise VestisError(f"{path}: its vestis metadata lacks {missing}")
    return {s: str(settings.get(s, "")) for s in SETTINGS}


def _check(parquet: Any, path: Path, dim: int, colour_dim: int) -> list[str]:
    """Every id (in file order), after checking columns, vector lengths and values, and unique ids."""
    names = parquet.schema_arrow.names
    missing = [c for c in REQUIRED + ((COLOUR,) if colour_dim else ()) if c not in names]
    if missing:
        raise VestisError(f"{path} lacks the column(s) {missing}")
    ids: list[str] = []
    for table in parquet.iter_batches(batch_size=BATCH, columns=["id", "vector", "metadata"]
                                      + ([COLOUR] if colour_dim else [])):
        for name, width in (("vector", dim), (COLOUR, colour_dim)):
            if not width:
                continue
            column = table.column(name)
            kind = column.type
            if pa.types.is_fixed_size_list(kind):
                right = kind.list_size == width
            elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
                lengths = column.value_lengths().to_numpy(zero_copy_only=False)
                right = bool(np.all(np.nan_to_num(lengths, nan=width) == width))
            else:
                raise VestisError(f"{path}: the {name} column must hold lists of numbers, not {kind}")
            if not right or (name == "vector" and column.null_count):
                raise VestisError(f"{path}: every {name} must hold {width} numbers (the collection's size)")
            if not pa.types.is_floating(kind.value_type) and not pa.types.is_integer(kind.value_type):
                raise VestisError(f"{path}: the {name} column must hold numbers, not {kind.value_type}")
            values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float64)
            if not np.all(np.isfinite(values)):
                raise VestisError(f"{path}: the {name} column holds NaN or infinite values")
        batch_ids = table.column("id").to_pylist()
        if any(not isinstance(i, str) or not i or len(i) > MAX_ID for i in batch_ids):
            raise VestisError(f"{path}: every id must be a text of 1 to {MAX_ID} characters")
        for text in table.column("metadata").to_pylist():
            _metadata(text, path)
        ids += batch_ids
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        twice = next(i for i in ids if i in seen or seen.add(i))
        raise VestisError(f"{path}: the id {twice!r} appears more than once")
    return ids


def _metadata(text: str | None, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        raise VestisError(f"{path}: a metadata cell is not JSON: {str(text)[:80]!r}") from None
    if not isinstance(value, dict):
        raise VestisError(f"{path}: a metadata cell is not a JSON object: {str(text)[:80]!r}")
    return value


def _batches(parquet: Any, colour_dim: int) -> Iterator[list[NewItem]]:
    columns = ["id", "source", "catalogue", "stamp", "hash", "vector", "metadata"] + ([COLOUR] if colour_dim else [])
    present = [c for c in columns if c in parquet.schema_arrow.names]
    for table in parquet.iter_batches(batch_size=BATCH, columns=present):
        data = {name: table.column(name) for name in present}
        n = table.num_rows
        vectors = np.asarray(data["vector"].flatten().to_numpy(zero_copy_only=False), np.float32).reshape(n, -1)
        colours = None
        if colour_dim:
            colours = [None if v is None else np.asarray(v, np.float32) for v in data[COLOUR].to_pylist()]
        text = {name: data[name].to_pylist() if name in data else [""] * n
                for name in ("id", "source", "catalogue", "stamp", "hash", "metadata")}
        yield [NewItem(id=text["id"][i], source=text["source"][i] or "", hash=text["hash"][i] or "",
                       vector=vectors[i], colour=None if colours is None else colours[i],
                       metadata=_metadata(text["metadata"][i], Path("")), stamp=text["stamp"][i] or "",
                       catalogue=text["catalogue"][i] or "") for i in range(n)]

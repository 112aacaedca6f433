"""A collection as one Parquet file and back: bit-exact, readable by dataframes, and every bad file
refused before anything is written."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vestis.errors import EncoderMismatchError, VestisError
from vestis.store.collection import Collection, NewItem
from vestis.store.export import export_collection, import_collection

DIM, COLOUR = 8, 4
VERSION = "test-encoder/1"


def items(n: int = 10, seed: int = 0) -> list[NewItem]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        v = rng.normal(size=DIM).astype(np.float32)
        c = rng.random(COLOUR).astype(np.float32)
        meta = {"kind": ["shirt", "dress"][i % 2], "year": 2010 + i, "title": f"Item no. {i} – ünïcode",
                "colour": "red", "source": "studio"}  # labels named like the file's own columns
        if i % 3 == 0:
            meta["rare"] = "yes"
        out.append(NewItem(f"item/{i}", f"/photos/{i}.jpg", f"hash{i}", v / np.linalg.norm(v), c, meta,
                           stamp=f"stamp{i}", catalogue="/photos"))
    return out


@pytest.fixture
def collection(tmp_path) -> Collection:
    coll = Collection.create(tmp_path / "c", encoder_name="test", encoder_version=VERSION, dim=DIM,
                             colour_dim=COLOUR, colour_version="c/1", index_spec="exact")
    coll.upsert(items())
    coll.remove(["item/4"])  # a removed item is not exported
    yield coll
    coll.close()


def snapshot(coll: Collection) -> dict:
    return {it.id: (it.source, it.hash, it.stamp, it.catalogue, it.metadata,
                    *(np.asarray(v).tobytes() if v is not None else None for v in coll.vector_of(it.id)))
            for it in coll.iter_items()}


def test_export_then_import_is_bit_exact(collection, tmp_path):
    out = tmp_path / "items.parquet"
    assert export_collection(collection, out).items == 9
    report = import_collection(out, tmp_path / "copy")
    assert report.items == 9
    with Collection.open(tmp_path / "copy") as copy:
        assert snapshot(copy) == snapshot(collection)
        assert (copy.encoder_version, copy.dim, copy.colour_dim) == (VERSION, DIM, COLOUR)
        query = collection.vector_of("item/3")[0]
        ranked = [(coll.search_vectors(query, 5)[1].tolist(), [it.id for it in coll.items_by_vid(
            coll.search_vectors(query, 5)[0].tolist())]) for coll in (copy, collection)]
        assert ranked[0] == ranked[1]  # the same ids in the same order with the same scores (vids differ)
    assert not list(tmp_path.glob(".items.parquet.*"))  # no temporary file left
    assert out.stat().st_mode & 0o777 == 0o644


def test_the_file_reads_as_a_dataframe(collection, tmp_path):
    pd = pytest.importorskip("pandas")
    out = tmp_path / "items.parquet"
    export_collection(collection, out)
    frame = pd.read_parquet(out)
    assert len(frame) == 9 and {"id", "source", "vector", "colour_descriptor", "kind", "year", "title", "rare",
                                "colour", "label_source"} <= set(frame)
    row = frame.set_index("id").loc["item/3"]
    assert row["kind"] == "dress" and row["year"] == "2013" and len(row["vector"]) == DIM
    assert row["source"] == "/photos/3.jpg" and row["label_source"] == "studio" and row["colour"] == "red"
    assert json.loads(row["metadata"])["year"] == 2013  # the exact labels, numbers as numbers
    assert pq.ParquetFile(out).schema_arrow.field("vector").type == pa.list_(pa.float32(), DIM)


def rewrite(src, dst, change) -> None:
    table = pq.read_table(src)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), dst)


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop_columns(["vector"]), r"lacks the column\(s\) \['vector'\]"),
    (lambda t: t.set_column(t.schema.get_field_index("vector"), "vector", pa.array(
        [[0.5] * 3] * t.num_rows, pa.list_(pa.float32(), 3))), "every vector must hold 8 numbers"),
    (lambda t: t.set_column(t.schema.get_field_index("vector"), "vector", pa.array(
        [[float("nan")] * DIM] * t.num_rows, pa.list_(pa.float32(), DIM))), "NaN or infinite"),
    (lambda t: pa.concat_tables([t, t.slice(0, 1)]), "appears more than once"),
    (lambda t: t.replace_schema_metadata({}), "not a vestis export"),
    (lambda t: t.set_column(t.schema.get_field_index("metadata"), "metadata", pa.array(["[1]"] * t.num_rows)),
     "not a JSON object"),
])
def test_a_bad_file_is_refused_and_nothing_is_written(collection, tmp_path, change, message):
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    export_collection(collection, good)
    if "not a vestis" in message:
        table = pq.read_table(good)
        pq.write_table(table.replace_schema_metadata({}), bad)
    else:
        rewrite(good, bad, change)
    with pytest.raises(VestisError, match=message):
        import_collection(bad, tmp_path / "new")
    assert not Collection.exists(tmp_path / "new")
    before = snapshot(collection)
    with pytest.raises(VestisError, match=message):
        import_collection(bad, collection.path)
    assert snapshot(collection) == before


def test_an_import_into_a_collection_of_another_encoder_or_with_its_ids_is_refused(collection, tmp_path):
    out = tmp_path / "items.parquet"
    export_collection(collection, out)
    with pytest.raises(VestisError, match="in .* already"):
        import_collection(out, collection.path)
    with Collection.create(tmp_path / "other", encoder_name="x", encoder_version="other/2", dim=DIM,
                           colour_dim=COLOUR) as other:
        other.upsert(items(1, seed=5)[:1])
    with pytest.raises(EncoderMismatchError):
        import_collection(out, tmp_path / "other")
    with pytest.raises(VestisError, match="no such file"):
        import_collection(tmp_path / "none.parquet", tmp_path / "x")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(VestisError, match="not a Parquet file"):
        import_collection(tmp_path / "junk.parquet", tmp_path / "x")


def test_a_full_disk_during_an_export_leaves_no_file(collection, tmp_path, monkeypatch):
    def full(self, table, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(OSError):
        export_collection(collection, tmp_path / "items.parquet")
    assert not list(tmp_path.glob("*items.parquet*"))


def test_the_cli_round_trip(collection, tmp_path):
    out = tmp_path / "items.parquet"
    collection.close()

    def vestis(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vestis", *args], capture_output=True, text=True, timeout=300)

    done = vestis("export", "--collection", str(collection.path), "--out", str(out))
    assert done.returncode == 0 and "9 items written" in done.stderr, done.stderr
    done = vestis("import", str(out), "--collection", str(tmp_path / "copy"))
    assert done.returncode == 0 and "9 items imported" in done.stderr, done.stderr
    info = json.loads(vestis("info", "--collection", str(tmp_path / "copy"), "--json").stdout)
    assert info["items"] == 9 and info["encoder_version"] == VERSION
    again = vestis("import", str(out), "--collection", str(tmp_path / "copy"))
    assert again.returncode == 2 and "already" in again.stderr and "Traceback" not in again.stderr

"""Several writers on one collection: every open handle searches exactly what SQLite holds.

Two ``Collection`` objects on one directory have their own SQLite connections, as two processes
do (a server and ``vestis index`` / ``vestis remove``)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.store.test_collection import CDIM, make, new_items
from vestis.store.collection import Collection


def stored_vids(path) -> list[int]:
    with Collection.open(path) as c:
        return sorted(it.vid for it in c.iter_items())


def table_vids(c: Collection) -> list[int]:
    return sorted(c.table().view[0].tolist())


@pytest.mark.parametrize("spec", ["exact", "hnsw"])
def test_stale_reader_saving_at_exit_does_not_hide_newer_items(tmp_path, spec):
    """The server loads the collection, the CLI removes one item and adds two, then the server
    saves its derived files at shutdown: a fresh open must still find the CLI's items."""
    rng = np.random.default_rng(0)
    path = tmp_path / "c"
    first = make(tmp_path, spec)
    first.upsert(new_items(rng, [f"i{n}" for n in range(20)]))
    first.persist()
    first.close()

    server = Collection.open(path)
    server.table()
    if server.uses_ann:
        server.index()
    cli = Collection.open(path)
    cli.remove(["i3"])
    cli.persist()
    new = new_items(rng, ["newA", "newB"])
    cli.upsert(new)
    cli.persist()
    cli.close()

    server.persist()  # what `vestis serve` does on SIGTERM
    server.close()

    fresh = Collection.open(path)
    assert table_vids(fresh) == stored_vids(path)
    for item in new:
        vid = fresh.get(item.id).vid
        if fresh.uses_ann:
            _, found = fresh.index().search(item.vector[None, :], 1)
            assert found[0][0] == vid
        assert vid in table_vids(fresh)
    assert "i3" not in fresh


def test_open_reader_sees_other_writers(tmp_path):
    """A reader that loaded the collection searches the items another handle adds and removes."""
    rng = np.random.default_rng(1)
    path = tmp_path / "c"
    writer = make(tmp_path, "hnsw")
    writer.upsert(new_items(rng, ["a", "b", "c"]))
    reader = Collection.open(path)
    assert table_vids(reader) == stored_vids(path)
    reader.index()
    writer.upsert(new_items(rng, ["d"]))
    writer.remove(["a"])
    assert table_vids(reader) == stored_vids(path)
    d = writer.get("d")
    _, found = reader.index().search(writer.vector_of("d")[0][None, :], 4)
    assert d.vid in found[0].tolist() and writer.get("b").vid in found[0].tolist()
    assert len(reader.index()) == 3
    # and the reader's own write on top of the others' keeps both
    reader.upsert(new_items(rng, ["e"]))
    assert table_vids(reader) == stored_vids(path) == table_vids(writer)


def test_truncated_vector_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(2)
    c = make(tmp_path)
    c.upsert(new_items(rng, ["a", "b", "c"]))
    c.persist()
    c.close()
    cache = next((tmp_path / "c" / "cache").glob("vectors-*")) / "vectors.npy"
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    with caplog.at_level("WARNING"):
        reopened = Collection.open(tmp_path / "c")
        assert table_vids(reopened) == stored_vids(tmp_path / "c")
    assert any("rebuilt" in r.getMessage() for r in caplog.records)
    assert reopened.table().view[2].shape[1] == CDIM


def test_orphan_temporary_files_are_removed_on_the_next_write(tmp_path):
    rng = np.random.default_rng(3)
    c = make(tmp_path, "hnsw")
    c.upsert(new_items(rng, ["a", "b"]))
    c.persist()
    orphans = [tmp_path / "c" / "cache" / ".vectors-9.x1.tmp", tmp_path / "c" / ".index.json.x2.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"torn")
    (tmp_path / "c" / ".index-9.tmp").mkdir()
    c.upsert(new_items(rng, ["c"]))
    c.persist()
    assert not any(p.exists() for p in orphans)
    assert not (tmp_path / "c" / ".index-9.tmp").exists()


def test_reopened_table_leaves_its_vectors_in_the_cache_file(tmp_path):
    """A reopened collection reads its vectors from ``cache/vectors-G/vectors.npy`` without copying
    them into memory; edits never write that file, and the next save writes a new generation."""
    rng = np.random.default_rng(4)
    path = tmp_path / "c"
    c = make(tmp_path)
    items = new_items(rng, [f"i{n}" for n in range(30)])
    c.upsert(items)
    c.persist()
    c.close()
    saved = next((path / "cache").glob("vectors-*")) / "vectors.npy"
    before = saved.read_bytes()

    reopened = Collection.open(path)
    table = reopened.table()
    assert table.mapped
    query = items[7].vector
    vids, vectors, _ = table.view
    expected = vids[np.argsort(-(np.stack([it.vector for it in items]) @ query), kind="stable")][:5]
    assert np.array_equal(vids[np.argsort(-(vectors @ query), kind="stable")][:5], expected)
    rows = table.rows_of(np.array([reopened.get("i7").vid, reopened.get("i2").vid]))
    assert np.array_equal(table.take(rows), np.stack([items[7].vector, items[2].vector]))

    added = new_items(rng, ["new"])
    reopened.upsert(added)
    reopened.remove(["i3"])
    assert saved.read_bytes() == before  # the saved generation is never written in place
    assert table_vids(reopened) == stored_vids(path)
    reopened.persist()
    reopened.close()
    assert not saved.exists()

    again = Collection.open(path)
    assert again.table().mapped
    assert table_vids(again) == stored_vids(path)
    row = again.table().rows_of(np.array([again.get("new").vid]))
    assert np.array_equal(again.table().take(row)[0], added[0].vector)
    again.close()


def test_a_cache_file_of_earlier_versions_is_read_then_replaced(tmp_path, monkeypatch):
    """Collections written before the cache became a folder open from their ``vectors-G.npz``
    (not from every SQLite row), and the next save replaces it with the folder."""
    rng = np.random.default_rng(6)
    path = tmp_path / "c"
    c = make(tmp_path)
    c.upsert(new_items(rng, ["a", "b", "c"]))
    c.persist()
    c.close()
    folder = next((path / "cache").glob("vectors-*"))
    vids, vectors = np.load(folder / "vids.npy"), np.load(folder / "vectors.npy")
    colours = np.load(folder / "colours.npy")
    np.savez(path / "cache" / f"{folder.name}.npz", vids=vids, vectors=vectors, colours=colours)
    shutil.rmtree(folder)

    from vestis.store.db import ItemDB

    monkeypatch.setattr(ItemDB, "rows", lambda self: pytest.fail("the table was rebuilt from SQLite"))
    reopened = Collection.open(path)
    assert not reopened.table().mapped and table_vids(reopened) == sorted(vids.tolist())
    reopened.persist()
    reopened.close()
    assert [p.name for p in (path / "cache").glob("vectors-*")] == [folder.name]
    assert Collection.open(path).table().mapped

"""Collection store: persistence, incremental add/remove, index catch-up, encoder checks."""

from __future__ import annotations

import numpy as np
import pytest

from vestis.errors import EncoderMismatchError, NotFoundError, VestisError
from vestis.store.collection import Collection, NewItem

DIM, CDIM = 16, 8


def unit(rng, n, dim=DIM):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def new_items(rng, ids, **meta):
    vecs, cols = unit(rng, len(ids)), unit(rng, len(ids), CDIM)
    return [
        NewItem(id=i, source=f"/x/{i}.jpg", hash=f"h{i}", vector=v, colour=c, metadata=dict(meta, n=i), stamp="s")
        for i, v, c in zip(ids, vecs, cols)
    ]


def make(tmp_path, spec="exact"):
    return Collection.create(
        tmp_path / "c", encoder_name="enc", encoder_version="enc/v1", dim=DIM, colour_dim=CDIM, index_spec=spec
    )


def test_create_open_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    c = make(tmp_path)
    items = new_items(rng, ["a", "b", "c"], colour="red")
    c.upsert(items)
    c.persist()
    c.close()
    c2 = Collection.open(tmp_path / "c")
    assert len(c2) == 3 and "b" in c2 and "z" not in c2
    it = c2.get("b")
    assert it.metadata == {"colour": "red", "n": "b"} and it.source == "/x/b.jpg"
    vec, col = c2.vector_of("b")
    np.testing.assert_array_equal(vec, items[1].vector)
    np.testing.assert_array_equal(col, items[1].colour)
    vids, vectors, _ = c2.table().view
    assert sorted(vids.tolist()) == sorted(i.vid for i in c2.iter_items())
    with pytest.raises(NotFoundError):
        c2.get("zzz")


def test_create_refuses_existing_and_open_refuses_missing(tmp_path):
    make(tmp_path).close()
    with pytest.raises(VestisError, match="already holds"):
        make(tmp_path)
    with pytest.raises(VestisError, match="no collection"):
        Collection.open(tmp_path / "nothing")


def test_replace_and_remove_never_reuse_vids(tmp_path):
    rng = np.random.default_rng(1)
    c = make(tmp_path)
    c.upsert(new_items(rng, ["a", "b"]))
    old_vid = c.get("a").vid
    c.upsert(new_items(rng, ["a"]))  # changed image: new vector, new vid
    assert c.get("a").vid > old_vid and len(c) == 2
    assert c.remove(["b", "nope"]) == 1
    assert len(c) == 1 and "b" not in c
    vids, _, _ = c.table().view
    assert vids.tolist() == [c.get("a").vid]


def test_encoder_mismatch_is_refused(tmp_path):
    c = make(tmp_path)
    c.check_encoder("enc/v1")
    with pytest.raises(EncoderMismatchError, match="enc"):
        c.check_encoder("other/v2")


def test_vector_shape_checked(tmp_path):
    c = make(tmp_path)
    with pytest.raises(VestisError, match="dim"):
        c.upsert([NewItem(id="x", source="s", hash="h", vector=np.zeros(3, np.float32))])


def test_filters_and_metadata_columns(tmp_path):
    rng = np.random.default_rng(2)
    c = make(tmp_path)
    c.upsert(new_items(rng, ["a", "b"], colour="red", kind="shirt"))
    c.upsert(new_items(rng, ["c"], colour="blue", kind="shirt"))
    c.upsert(new_items(rng, ["d"], colour="blue", kind="dress"))
    ids = lambda vids: sorted(it.id for it in c.items_by_vid(vids.tolist()))  # noqa: E731
    assert ids(c.filter_vids({"colour": ["red"]})) == ["a", "b"]
    assert ids(c.filter_vids({"colour": ["red", "blue"], "kind": ["shirt"]})) == ["a", "b", "c"]
    assert ids(c.filter_vids({"colour": ["green"]})) == []
    cols = c.metadata_columns()
    assert dict(cols["colour"]) == {"red": 2, "blue": 2}


@pytest.mark.parametrize("spec", ["hnsw", "annoy"])
def test_ann_index_catches_up_after_reopen(tmp_path, spec):
    """An index saved at generation G is brought up to date with later writes on open."""
    rng = np.random.default_rng(3)
    c = make(tmp_path, spec)
    first = new_items(rng, [f"i{n}" for n in range(200)])
    c.upsert(first)
    c.persist()
    # Writes after the last persist (as if the process died before saving the index).
    later = new_items(rng, ["late1", "late2"])
    c.upsert(later)
    c.remove(["i0", "i1"])
    c.close()
    c2 = Collection.open(tmp_path / "c")
    index = c2.index()
    assert len(index) == 200
    assert index._store.mapped  # its float32 vectors stay in files, out of the process's memory
    scores, vids = index.search(later[0].vector[None, :], 1)
    assert c2.items_by_vid(vids[0].tolist())[0].id == "late1"
    gone = {c2_vid for c2_vid in vids[0]}
    _, vids_all = index.search(first[0].vector[None, :], 5)
    assert all(it.id != "i0" for it in c2.items_by_vid([v for v in vids_all[0] if v >= 0]))
    assert gone


def test_cache_is_ignored_when_stale(tmp_path):
    rng = np.random.default_rng(4)
    c = make(tmp_path)
    c.upsert(new_items(rng, ["a", "b"]))
    c.persist()
    c.upsert(new_items(rng, ["c"]))  # generation moves on without a new cache
    c.close()
    c2 = Collection.open(tmp_path / "c")
    assert c2.table().n_alive == 3


def test_catching_up_reads_only_the_new_generations(tmp_path):
    """Catch-up queries use the generation indexes (no scan of every stored vector), and a
    collection made before those indexes existed gets them when it is opened."""
    import sqlite3

    rng = np.random.default_rng(5)
    c = make(tmp_path)
    c.upsert(new_items(rng, ["a", "b"]))
    c.close()
    db = tmp_path / "c" / "collection.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("DROP INDEX items_by_gen")
        conn.execute("DROP INDEX removed_by_gen")
    reopened = Collection.open(tmp_path / "c")
    plan = " ".join(str(r) for r in reopened.db.read(
        "EXPLAIN QUERY PLAN SELECT vid, vector, colour FROM items WHERE gen > ? AND gen <= ? ORDER BY vid", (0, 1)))
    assert "items_by_gen" in plan
    assert reopened.db.changes(5, 5).added == []
    assert [r[0] for r in reopened.db.changes(0).added] == [reopened.get("a").vid, reopened.get("b").vid]
    reopened.close()

"""The per-attribute vector store: survives save/load, follows incremental adds, removals and
replacements (also made by another process), and refuses vectors of another attribute model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vestis.errors import EncoderMismatchError, VestisError
from vestis.store.attribute_index import CACHE, AttributeIndex
from vestis.store.collection import Collection, NewItem

DIM, ATTRIBUTES, ATTR_DIM = 8, ["colour", "kind", "pattern"], 4
VERSION = "test-encoder/1"


def fake_model(directory: Path, version: str = "attr/1/sha256:aaaa") -> SimpleNamespace:
    """What the index reads of an attribute model: its files, version, attributes, size and backbone."""
    path = directory / f"attr-{version[-4:]}.onnx"
    path.write_bytes(version.encode())
    path.with_suffix(".json").write_text("{}")
    return SimpleNamespace(
        version=version,
        attributes=ATTRIBUTES,
        dim=ATTR_DIM,
        path=path,
        backbone=SimpleNamespace(version=VERSION),
    )


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    v = rng.normal(size=shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def new_items(ids: list[str], seed: int = 0) -> list[NewItem]:
    rng = np.random.default_rng(seed)
    return [
        NewItem(i, f"/img/{i}.jpg", f"hash-{i}-{seed}", unit(rng, DIM), None, {"kind": "shirt"}) for i in ids
    ]


@pytest.fixture
def collection(tmp_path) -> Collection:
    coll = Collection.create(
        tmp_path / "c", encoder_name="test", encoder_version=VERSION, dim=DIM, colour_dim=0
    )
    coll.upsert(new_items(["a", "b", "c", "d"]))
    yield coll
    coll.close()


def embed_all(index: AttributeIndex, seed: int = 1) -> dict[int, np.ndarray]:
    """Give every item lacking vectors random attribute vectors; returns them by vid."""
    vids = np.array([row[0] for row in index.missing()], np.int64)
    vectors = unit(np.random.default_rng(seed), len(vids), len(ATTRIBUTES), ATTR_DIM)
    assert index.add(vids, vectors) == len(vids)
    return dict(zip(vids.tolist(), vectors))


def table_state(index: AttributeIndex) -> dict[int, np.ndarray]:
    vids, vectors, _ = index.table().view
    return {v: vectors[i].reshape(len(ATTRIBUTES), ATTR_DIM).copy() for i, v in enumerate(vids.tolist())}


def assert_same(got: dict[int, np.ndarray], expected: dict[int, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for vid, vectors in expected.items():
        np.testing.assert_array_equal(got[vid], vectors)


def test_a_collection_without_attribute_model_has_no_index(collection):
    assert AttributeIndex.open(collection) is None


def test_vectors_survive_save_and_load_with_and_without_the_cache(collection):
    index = AttributeIndex.configure(collection, fake_model(collection.path.parent))
    assert [row[1] for row in index.missing()] == ["a", "b", "c", "d"]  # every item, labelled or not
    expected = embed_all(index)
    assert index.missing() == []
    assert_same(table_state(index), expected)
    index.save()
    path = collection.path
    collection.close()
    for drop_cache in (False, True):
        if drop_cache:
            (path / "cache" / CACHE).unlink()
        with Collection.open(path) as coll:
            index = AttributeIndex.open(coll)
            assert index.attributes == ATTRIBUTES and index.dim == ATTR_DIM
            assert index.model_version == "attr/1/sha256:aaaa"
            assert (path / index.model_path).read_bytes() == b"attr/1/sha256:aaaa"  # the collection's copy
            assert_same(table_state(index), expected)
            assert (path / "cache" / CACHE).exists() != drop_cache
            np.testing.assert_array_equal(
                index.stored_vectors(coll.get("b").vid), expected[coll.get("b").vid]
            )


def test_incremental_add_remove_and_replace_by_another_process(collection):
    index = AttributeIndex.configure(collection, fake_model(collection.path.parent))
    expected = embed_all(index)
    index.save()
    assert_same(table_state(index), expected)
    # another process: its own handles on the same collection
    with Collection.open(collection.path) as other:
        other_index = AttributeIndex.open(other)
        vid_b, vid_c = other.get("b").vid, other.get("c").vid
        other.remove(["b"])
        other.upsert(new_items(["c", "e"], seed=5))  # c replaced (new content, new vid), e new
        assert {row[1] for row in other_index.missing()} == {"c", "e"}  # c's old vectors went with it
        added = embed_all(other_index, seed=7)
    del expected[vid_b], expected[vid_c]
    expected.update(added)
    assert_same(table_state(index), expected)  # caught up without reloading
    assert index.stored_vectors(vid_b) is None
    # a fresh open starts from the saved (now stale) cache and catches up the same way
    fresh = AttributeIndex.open(collection)
    assert_same(table_state(fresh), expected)


def test_vectors_of_items_removed_meanwhile_are_not_written(collection):
    index = AttributeIndex.configure(collection, fake_model(collection.path.parent))
    vids = np.array([row[0] for row in index.missing()], np.int64)
    collection.remove(["a"])
    written = index.add(vids, unit(np.random.default_rng(0), len(vids), len(ATTRIBUTES), ATTR_DIM))
    assert written == 3 and sorted(table_state(index)) == sorted(vids[1:].tolist())


def test_add_checks_the_shape(collection):
    model = fake_model(collection.path.parent)
    index = AttributeIndex.configure(collection, model)
    with pytest.raises(VestisError, match="2 x 3 x 4"):
        index.add(np.array([1, 2]), np.zeros((2, 2, ATTR_DIM), np.float32))


def test_another_model_is_refused_unless_rebuilding(collection):
    index = AttributeIndex.configure(collection, fake_model(collection.path.parent))
    embed_all(index)
    index.save()
    other = fake_model(collection.path.parent, "attr/2/sha256:bbbb")
    with pytest.raises(EncoderMismatchError, match="--rebuild"):
        AttributeIndex.configure(collection, other)
    index = AttributeIndex.open(collection)
    with pytest.raises(EncoderMismatchError):
        index.check_model(other)
    index = AttributeIndex.configure(collection, other, rebuild=True)
    assert index.model_version == other.version
    assert (collection.path / index.model_path).read_bytes() == b"attr/2/sha256:bbbb"
    assert len(index.missing()) == 4 and table_state(index) == {}
    assert not (collection.path / "cache" / CACHE).exists()


def test_a_model_for_another_encoder_is_refused(collection):
    model = fake_model(collection.path.parent)
    model.backbone = SimpleNamespace(version="other-encoder/1")
    with pytest.raises(EncoderMismatchError):
        AttributeIndex.configure(collection, model)

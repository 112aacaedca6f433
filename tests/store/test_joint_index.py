"""Joint-space vectors and the keyword index follow the collection: added, changed and removed
items (also by another process), a model change refused unless rebuilt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vestis.encoders.joint import JointModel
from vestis.encoders.text import text_encoder_version
from vestis.errors import EncoderMismatchError
from vestis.store.collection import Collection, NewItem
from vestis.store.joint_index import JointIndex
from vestis.store.vector_builds import build_joint_index, update_joint
from vestis.store.keyword_index import KeywordIndex, item_document
from vestis.train.joint import Projection, write_joint_model

DIM, JOINT_DIM = 8, 4
VERSION = "test-encoder/1"
TITLES = {"a": "Turtle Check Men Navy Blue Shirt", "b": "Puma Men Black Sneakers",
          "c": "Titan Women Silver Watch", "d": "Jealous 21 Women Red Floral Dress"}


def joint_model(directory: Path, seed: int = 0, image_version: str = VERSION) -> JointModel:
    """A real (untrained, seeded) joint model over DIM-d image vectors, exported to ONNX."""
    torch.manual_seed(seed)
    path = write_joint_model(Projection(DIM, JOINT_DIM), Projection(384, JOINT_DIM), directory / f"joint-{seed}",
                             name="test-joint", version=str(seed), image_encoder="test",
                             image_encoder_version=image_version, text_encoder="all-minilm-l6-v2",
                             text_encoder_version=text_encoder_version("all-minilm-l6-v2"), logit_scale=10.0)
    return JointModel(path)


def new_items(titles: dict[str, str], seed: int = 0) -> list[NewItem]:
    rng = np.random.default_rng(seed)
    out = []
    for item_id, title in titles.items():
        v = rng.normal(size=DIM).astype(np.float32)
        out.append(NewItem(item_id, f"/img/{item_id}.jpg", f"hash-{item_id}-{seed}", v / np.linalg.norm(v), None,
                           {"productDisplayName": title, "year": "2012", "flag": "yes"}))
    return out


@pytest.fixture
def collection(tmp_path) -> Collection:
    coll = Collection.create(tmp_path / "c", encoder_name="test", encoder_version=VERSION, dim=DIM, colour_dim=0)
    coll.upsert(new_items(TITLES))
    yield coll
    coll.close()


def expected(coll: Collection, model: JointModel) -> dict[int, np.ndarray]:
    vids, vectors, _ = coll.table().view
    return dict(zip(vids.tolist(), model.embed_image_features(vectors)))


def state(index: JointIndex) -> dict[int, np.ndarray]:
    vids, vectors = index.vectors()
    return dict(zip(vids.tolist(), vectors.copy()))


def assert_same(got: dict[int, np.ndarray], want: dict[int, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for vid in want:
        np.testing.assert_allclose(got[vid], want[vid], atol=1e-6)


def test_build_projects_every_item_and_the_model_travels_with_the_collection(collection, tmp_path):
    model = joint_model(tmp_path)
    assert JointIndex.open(collection) is None
    report = build_joint_index(collection, model)
    assert report.embedded == 4
    index = JointIndex.open(collection)
    assert_same(state(index), expected(collection, model))
    loaded = index.load_model()
    assert loaded.version == model.version
    assert loaded.path.parent == collection.path / "joint_model"
    assert index.info()["items_embedded"] == 4
    assert build_joint_index(collection, model).embedded == 0  # nothing new


def test_added_changed_and_removed_items_follow(collection, tmp_path):
    model = joint_model(tmp_path)
    build_joint_index(collection, model)
    with Collection.open(collection.path) as other:
        index = JointIndex.open(other)
        before = state(index)
        collection.upsert(new_items({"b": "Puma Men Black Sneakers", "e": "Nike Men Blue T-shirt"}, seed=1))
        collection.remove(["c"])
        report = update_joint(collection)
        assert report.embedded == 2  # the new item and the changed one, nothing else
        other_state = state(index)  # caught up from another handle: removals and new rows
    now = expected(collection, model)
    assert_same(other_state, now)
    assert sorted(now) != sorted(before)
    b = collection.get("b").vid
    assert not np.allclose(now[b], before.get(b, np.zeros(JOINT_DIM)))


def test_another_model_or_image_encoder_is_refused_unless_rebuilt(collection, tmp_path):
    build_joint_index(collection, joint_model(tmp_path, 0))
    other = joint_model(tmp_path, 1)
    with pytest.raises(EncoderMismatchError, match="--rebuild"):
        build_joint_index(collection, other)
    with pytest.raises(EncoderMismatchError):
        JointIndex.open(collection).check_version(other.version)
    assert build_joint_index(collection, other, rebuild=True).embedded == 4
    assert_same(state(JointIndex.open(collection)), expected(collection, other))
    with pytest.raises(EncoderMismatchError):
        build_joint_index(collection, joint_model(tmp_path, 2, image_version="another/1"))


def test_keyword_documents_leave_out_numbers_and_flags():
    assert item_document({"productDisplayName": "Men Navy Shirt", "year": "2012", "flag": "no",
                          "baseColour": "Navy Blue", "n": 3}) == "Men Navy Shirt Navy Blue"


def test_keyword_search_ranks_by_words_and_follows_the_collection(collection):
    index = KeywordIndex(collection)
    vids, scores = index.search("black sneakers", 10)
    assert [collection.items_by_vid([v])[0].id for v in vids] == ["b"]
    assert scores[0] > 0
    assert index.search("women", 10)[0].size == 2  # watch and dress; stop words and unknown words match nothing
    assert index.search("the zebra", 10)[0].size == 0
    collection.upsert(new_items({"e": "Nike Men Black Running Sneakers"}, seed=2))
    collection.remove(["b"])
    assert [collection.items_by_vid([v])[0].id for v in index.search("sneaker", 10)[0]] == ["e"]  # stemmed
    cached = list((collection.path / "cache").glob("keywords-*"))
    assert len(cached) == 1  # one generation cached, older ones dropped
    fresh = KeywordIndex(collection)  # reads the cache
    assert [collection.items_by_vid([v])[0].id for v in fresh.search("running", 10)[0]] == ["e"]


def test_keyword_search_on_a_collection_without_words(tmp_path):
    """Photos with ids only (no titles, no word labels): keyword search finds nothing, no error;
    once an item with words arrives it is found."""
    coll = Collection.create(tmp_path / "c", encoder_name="test", encoder_version=VERSION, dim=DIM, colour_dim=0)
    items = new_items({"p1": "", "p2": ""})
    for it in items:
        it.metadata = {"year": "2012", "flag": "yes"}
    coll.upsert(items)
    index = KeywordIndex(coll)
    assert index.search("dress", 10)[0].size == 0
    coll.upsert(new_items({"p3": "Red Summer Dress"}, seed=3))
    assert [coll.items_by_vid([v])[0].id for v in index.search("dress", 10)[0]] == ["p3"]
    coll.close()


def test_a_keyword_cache_that_cannot_be_written_leaves_no_folder_behind(collection, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    index = KeywordIndex(collection)
    assert [collection.items_by_vid([v])[0].id for v in index.search("black sneakers", 10)[0]] == ["b"]
    assert not [p.name for p in (collection.path / "cache").iterdir() if "keywords" in p.name]


def test_too_many_joint_vectors_for_a_scan_go_behind_the_ann_index(collection, tmp_path, monkeypatch):
    from vestis.store import joint_index

    model = joint_model(tmp_path)
    build_joint_index(collection, model)
    index = JointIndex.open(collection)
    assert index.ann() is None  # four vectors: an exact scan
    monkeypatch.setattr(joint_index, "EXACT_MAX_BYTES", 4 * JOINT_DIM * 2)  # an exact scan of 2 vectors at most
    ann = index.ann()
    assert ann is not None and len(ann) == 4
    assert (collection.path / "cache" / joint_index.ANN_DIR / "joint.json").is_file()
    vids, vectors = index.vectors()
    query = vectors[0]
    scores, found = ann.search(query[None, :], 4)
    assert found[0].tolist() == vids[np.argsort(-(vectors @ query), kind="stable")].tolist()  # exact on 4
    collection.upsert(new_items({"e": "Nike Men Blue T-shirt"}, seed=1))
    collection.remove(["c"])
    update_joint(collection)
    assert sorted(index.ann().search(query[None, :], 10)[1][0][:4].tolist()) == sorted(index.vectors()[0].tolist())
    reopened = JointIndex.open(collection).ann()  # the saved index, caught up
    assert len(reopened) == 4 and collection.get("e").vid in reopened.search(query[None, :], 4)[1][0].tolist()

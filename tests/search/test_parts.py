"""Category-aware region search (vestis.search.parts): the catalogue's own vectors and part labels
tell a region's tops from its dresses, and the region's page is shared between the parts."""

from __future__ import annotations

import matplotlib.cbook
import pytest

from tests.conftest import garment_image, jpeg_bytes, write_catalogue
from vestis.data import open_catalogue
from vestis.encoders import get_encoder
from vestis.search.engine import Engine
from vestis.search.parts import PartSplit, PartSplits, SplitSettings, merge
from vestis.search.results import SearchHit
from vestis.search.query import SearchQuery
from vestis.store.ingest import index_catalogue, open_or_create

COLOURS = {"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60)}
PART = {"shirt": "Topwear", "dress": "Dress", "trousers": "Bottomwear"}
TOP_SCOPE = {"subCategory": ["Topwear", "Dress"]}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """24 shirts (Topwear), 24 dresses (Dress) and 24 trousers (Bottomwear)."""
    root = tmp_path_factory.mktemp("parts")
    write_catalogue(root / "shop", COLOURS, list(PART), copies=8,
                    labels=lambda colour, shape, n: {"subCategory": PART[shape]})
    encoder = get_encoder("efficientnet-lite0")
    collection = open_or_create(root / "collection", encoder, None)
    index_catalogue(collection, open_catalogue(root / "shop"), encoder, batch_size=8, progress=False)
    with Engine(collection, encoder=encoder) as engine:
        yield engine


def vector(engine: Engine, shape: str, colour=(120, 90, 40)):
    return engine.encoder.embed_images([garment_image(colour, shape, seed=99)])[0]


def test_the_catalogue_tells_a_dress_from_a_top(engine):
    split = engine.part_splits.get(engine.collection, "top", TOP_SCOPE)
    assert split is not None and split.main == ["Topwear"] and split.alternatives == ["Dress"]
    assert split.probabilities(vector(engine, "dress"))["Dress"] > split.settings.owns_from
    assert split.probabilities(vector(engine, "shirt"))["Dress"] < 0.5
    assert split.quotas(vector(engine, "shirt"), 10)[""] >= 9
    assert split.quotas(vector(engine, "dress"), 10) == {"Dress": 9, "": 1}  # a dress, and one top in case


def test_an_uncertain_region_shows_the_alternative_among_its_first_results():
    settings = SplitSettings(owns_from=0.6, share_from=0.05, share=0.1)

    class Model:  # a model 30 % sure of a dress
        def predict_proba(self, x):
            return [[0.7, 0.3]]

    split = PartSplit("subCategory", ["Topwear"], ["Dress"], Model(), settings)
    assert split.quotas([0.0], 10) == {"": 9, "Dress": 1}
    assert split.quotas([0.0], 50) == {"": 45, "Dress": 5}
    split.settings = SplitSettings(share_from=0.5)
    assert split.quotas([0.0], 10) == {"": 10}
    split.settings = SplitSettings(owns_from=0.25)  # the dress owns the page, the top keeps a share
    assert split.quotas([0.0], 10) == {"Dress": 9, "": 1}


def test_the_split_search_ranks_each_parts_share_by_score(engine):
    split = engine.part_splits.get(engine.collection, "top", TOP_SCOPE)
    query = engine.query(image=garment_image((190, 40, 40), "shirt", seed=5))
    split.settings = SplitSettings(owns_from=2.0, share_from=0.0, share=0.3)  # force a shared page
    try:
        response = split.search(query.vector, 10, 0, lambda part, n: engine.search(query, k=n, filters=part))
    finally:
        split.settings = engine.part_splits.settings
    parts = [h.metadata["subCategory"] for h in response.hits]
    assert parts.count("Dress") == 3 and parts.count("Topwear") == 7
    tops = [h.score for h in response.hits if h.metadata["subCategory"] == "Topwear"]
    assert tops == sorted(tops, reverse=True)
    dress_at = [i for i, p in enumerate(parts) if p == "Dress"]
    assert all(i <= due for i, due in zip(dress_at, (2, 5, 9), strict=True))  # a share in every stretch
    assert response.hits[0].id.startswith("red-shirt")


def test_no_split_without_both_parts_or_enough_items(engine):
    parts = engine.part_splits
    assert parts.get(engine.collection, "top", {"subCategory": ["Topwear"]}) is None  # the query filtered it
    assert parts.get(engine.collection, "shoes", {"subCategory": ["Topwear", "Dress"]}) is None
    assert parts.get(engine.collection, "top", {}) is None  # a catalogue without the labels
    assert PartSplits().get(engine.collection, "top", {"subCategory": ["Bottomwear", "Dress"]}) is not None


def test_a_top_region_searches_its_parts_and_a_garment_photo_searches_as_before(engine):
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        portrait = f.read()
    outcome = engine.run(SearchQuery(image=portrait, image_name="q.jpg", region="top", k=10))
    assert {h.metadata["subCategory"] for h in outcome.response.hits} <= {"Topwear", "Dress"}
    assert outcome.regions[0].region.name == "top"
    unscoped = engine.run(SearchQuery(image=portrait, image_name="q.jpg", region="top", region_scope=False, k=72))
    assert {h.metadata["subCategory"] for h in unscoped.response.hits} == set(PART.values())
    garment = garment_image((30, 50, 200), "dress", seed=3)
    data = jpeg_bytes(garment)
    plain = engine.run(SearchQuery(image=data, image_name="g.jpg", k=10))
    auto = engine.run(SearchQuery(image=data, image_name="g.jpg", region="auto", k=10))
    assert not auto.regions
    assert [(h.id, h.score) for h in auto.response.hits] == [(h.id, h.score) for h in plain.response.hits]


def test_an_alternatives_share_shows_on_the_first_page_of_a_long_list():
    tops = [SearchHit(f"t{i}", 0.9 - i / 100, "", {}) for i in range(45)]
    dresses = [SearchHit(f"d{i}", 0.3 - i / 100, "", {}) for i in range(5)]
    merged = merge({"": tops, "Dress": dresses}, 50, owner="")
    assert [merged.index(d) for d in dresses] == [9, 19, 29, 39, 49]
    assert [h.id for h in merge({"": tops[:9], "Dress": dresses[:1]}, 10, owner="")] == [h.id for h in tops[:9]] + ["d0"]
    assert merge({"": tops[:2], "Dress": [SearchHit("d", 0.95, "", {})]}, 3, owner="")[0].id == "d"  # by score
    assert [h.id for h in merge({"Dress": dresses, "": tops[:1]}, 6, owner="Dress")] == ["t0", "d0", "d1", "d2", "d3", "d4"]
    page = merge({"Dress": [SearchHit(f"d{i}", 0.3, "", {}) for i in range(45)], "": tops[:5]}, 50, owner="Dress")
    assert [i for i, h in enumerate(page) if h.id.startswith("t")] == [0, 10, 20, 30, 40]  # no more than its share


def test_a_write_keeps_the_last_fit_answering_while_the_new_one_is_fitted(engine):
    import time

    parts = PartSplits()
    first = parts.get(engine.collection, "top", TOP_SCOPE)
    item = next(engine.collection.iter_items())
    engine.collection.update_metadata([(item.id, dict(item.metadata))])  # a write: a new generation
    assert parts.get(engine.collection, "top", TOP_SCOPE) is first  # answered at once by the last fit
    deadline = time.monotonic() + 120  # the refit runs in a background thread; a busy machine is slow
    while (split := parts.get(engine.collection, "top", TOP_SCOPE)) is first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert split is not first and split.alternatives == ["Dress"]

"""POST /search in words: text alone, text with an image or item, positive/negative examples, modes,
errors; items added through the API are searchable in words at once."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import add_joint_model
from tests.conftest import garment_image, jpeg_bytes
from vestis.api.app import create_app

pytestmark = pytest.mark.slow  # the real image and text encoders

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def client(collection_copy, api_encoder, tmp_path_factory):
    """The API over a copy of the shop with a joint model of untrained heads."""
    add_joint_model(collection_copy, api_encoder, tmp_path_factory.mktemp("joint"))
    with TestClient(create_app(collection_copy, api_key=KEY, encoder=api_encoder, workers=2)) as c:
        yield c


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [h["id"] for h in response.json()["results"]]


def test_text_alone_in_each_mode(client):
    r = client.post("/search", json={"text": "red shirt", "mode": "keyword", "k": 2})
    assert sorted(ids(r)) == ["red-shirt-0", "red-shirt-1"]
    assert r.json()["query"] == {"type": "text", "mode": "keyword", "text": "red shirt"}
    hybrid = client.post("/search", json={"text": "red shirt", "k": 24})
    assert hybrid.json()["query"]["mode"] == "hybrid"  # the default with a joint model
    understood = hybrid.json()["query"]["understood"]  # the label values read in the words
    assert 'colour=red ("red")' in understood and 'kind=shirt ("shirt")' in understood
    assert set(ids(hybrid)[:2]) == {"red-shirt-0", "red-shirt-1"}  # first in the keyword ranking
    assert {"embed_text", "search", "total"} <= set(hybrid.json()["timings_ms"])
    vector = client.post("/search", json={"text": "red shirt", "mode": "vector", "k": 24})
    assert len(ids(vector)) == 24
    page = client.post("/search", json={"text": "red shirt", "mode": "vector", "k": 5, "offset": 5})
    assert ids(page) == ids(vector)[5:10]
    filtered = client.post("/search", json={"text": "shirt", "mode": "keyword", "k": 24, "filters": {"colour": "blue"}})
    assert sorted(ids(filtered)) == ["blue-shirt-0", "blue-shirt-1"]


def test_text_with_an_item_or_an_image_and_examples(client):
    composed = ids(client.post("/search", json={"item_id": "blue-dress-0", "text": "red", "k": 24}))
    assert "blue-dress-0" not in composed and len(composed) == 23
    examples = ids(client.post("/search", json={"positive": ["2:red-shirt-0", "red-dress-0"],
                                               "negative": ["green-shirt-0"], "k": 24}))
    assert not {"red-shirt-0", "red-dress-0", "green-shirt-0"} & set(examples) and len(examples) == 21
    upload = {"file": ("q.jpg", jpeg_bytes(garment_image((200, 30, 30), "shirt", seed=7)), "image/jpeg")}
    r = client.post("/search", files=upload, data={"text": "blue", "k": "3", "positive": '["blue-shirt-0"]'})
    assert r.json()["query"]["type"] == "text" and len(ids(r)) == 3


def test_a_garment_region_composed_with_words(client):
    """Shop the look with words: the top region of a photo of a person, 'but in red'."""
    import matplotlib.cbook

    from vestis.encoders import regions

    if not regions.models_installed():
        pytest.skip("the pose models are not installed (make install)")
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        portrait = f.read()
    upload = {"file": ("portrait.jpg", portrait, "image/jpeg")}
    r = client.post("/search", files=upload, data={"text": "red", "region": "top", "k": "4", "mode": "vector"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["query"]["type"] == "text" and [g["name"] for g in answer["regions"]] == ["top"]
    assert [h["id"] for h in answer["regions"][0]["results"]] == ids(r)
    whole = client.post("/search", files=upload, data={"text": "red", "k": "4", "mode": "vector"})
    assert [h["score"] for h in whole.json()["results"]] != [h["score"] for h in answer["results"]]


@pytest.mark.parametrize("body, status, message", [
    ({"text": ""}, 422, "at least 1 character"),
    ({"text": "red", "mode": "fuzzy"}, 422, "keyword"),
    ({"text": "red", "attrs": "colour"}, 422, "attributes cannot be combined"),
    ({"text": "red", "color_weight": 0.5}, 422, "color_weight"),
    ({"negative": ["red-shirt-0"]}, 422, "give an image, an item id, a text or positive"),
    ({"positive": ["no-such-item"]}, 404, "no-such-item"),
    ({"positive": ["0:red-shirt-0"]}, 422, "its weight must be a number above 0"),
    # weights that overflow, or dwarf the others, are refused instead of giving NaN or all-zero scores
    ({"positive": ["1" + "0" * 400 + ":red-shirt-0"], "negative": ["red-shirt-1"]}, 422, "at most 100"),
    ({"item_id": "red-shirt-0", "negative": ["99999999999999999999999999999999999999:red-shirt-1"]}, 422,
     "at most 100"),
    ({"text": "red", "item_id": "red-shirt-0", "mode": "keyword"}, 422, "keyword search takes words only"),
])
def test_bad_text_queries_are_clear_errors(client, body, status, message):
    r = client.post("/search", json=body)
    assert r.status_code == status, r.text
    assert message in r.text


def test_an_added_item_is_searchable_in_words_at_once(client):
    data = jpeg_bytes(garment_image((240, 200, 20), "dress", seed=11))
    r = client.post("/items", files={"file": ("y.jpg", data, "image/jpeg")},
                    data={"id": "yellow-dress-9", "metadata": '{"colour": "yellow", "kind": "dress", '
                                                              '"name": "Sunflower maxi dress"}'},
                    headers={"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    assert ids(client.post("/search", json={"text": "sunflower", "mode": "keyword"})) == ["yellow-dress-9"]
    assert "yellow-dress-9" in ids(client.post("/search", json={"text": "dress", "mode": "vector", "k": 25}))
    assert client.delete("/items/yellow-dress-9", headers={"X-API-Key": KEY}).status_code in (200, 204)
    assert ids(client.post("/search", json={"text": "sunflower", "mode": "keyword"})) == []

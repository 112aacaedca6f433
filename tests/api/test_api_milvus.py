"""The HTTP API on a Milvus (Lite) collection answers as on the local collection of the same catalogue:
search, filters, "more like this", add and delete."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import garment_image, jpeg_bytes
from vestis.api.app import create_app
from vestis.data import open_catalogue
from vestis.store.factory import open_collection
from vestis.store.ingest import index_catalogue, open_or_create

pytestmark = pytest.mark.slow
pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def location(tmp_path_factory, shop_dir, api_encoder) -> str:
    where = f"milvus-lite:{tmp_path_factory.mktemp('milvus') / 'shop.db'}"
    with open_or_create(where, api_encoder, None) as coll:
        index_catalogue(coll, open_catalogue(shop_dir), api_encoder, batch_size=8, progress=False)
    return where


@pytest.fixture(scope="module")
def client(location, api_encoder):
    with TestClient(create_app(location, api_key=KEY, encoder=api_encoder, workers=2)) as c:
        yield c


@pytest.fixture(scope="module")
def local_client(collection_copy, api_encoder):
    with TestClient(create_app(collection_copy, encoder=api_encoder, workers=2)) as c:
        yield c


REQUESTS = [
    {"image": ((200, 30, 30), "shirt", 5), "k": "5"},
    {"json": {"item_id": "blue-dress-0", "k": 4, "filters": {"kind": ["dress", "shirt"], "colour": "blue"}}},
    {"json": {"item_id": "green-trousers-1", "k": 6, "offset": 2}},
    {"json": {"item_id": "black-shirt-0", "k": 5, "color_weight": 0.5}},
]


@pytest.mark.parametrize("request_", REQUESTS, ids=["upload", "filters", "paging", "colour"])
def test_search_answers_as_the_local_store(client, local_client, request_):
    def ask(c):
        if "image" in request_:
            rgb, shape, seed = request_["image"]
            data = jpeg_bytes(garment_image(rgb, shape, seed=seed))
            return c.post("/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": request_["k"]})
        return c.post("/search", json=request_["json"])

    milvus, local = ask(client), ask(local_client)
    assert milvus.status_code == local.status_code == 200, milvus.text
    got, want = milvus.json()["results"], local.json()["results"]
    assert [h["id"] for h in got] == [h["id"] for h in want] and got
    assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-5)
    assert [h["metadata"] for h in got] == [h["metadata"] for h in want]


def test_similar_and_info(client, local_client):
    similar = client.get("/items/red-shirt-0/similar", params={"k": 3}).json()["results"]
    assert [h["id"] for h in similar] == [
        h["id"] for h in local_client.get("/items/red-shirt-0/similar", params={"k": 3}).json()["results"]]
    info, local_info = client.get("/api/info").json(), local_client.get("/api/info").json()
    assert info["items"] == 24 and info["columns"] == local_info["columns"]


def test_add_then_search_then_delete(client, location):
    data = jpeg_bytes(garment_image((240, 200, 20), "dress", seed=11))
    r = client.post("/items", files={"file": ("y.jpg", data, "image/jpeg")},
                    data={"id": "yellow-dress-9", "metadata": '{"colour": "yellow", "kind": "dress"}'},
                    headers={"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    hits = client.post("/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "1"}).json()["results"]
    assert hits[0]["id"] == "yellow-dress-9" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    yellow = client.post("/search", json={"item_id": "red-dress-0", "k": 5, "filters": {"colour": ["yellow"]}})
    assert [h["id"] for h in yellow.json()["results"]] == ["yellow-dress-9"]
    assert client.delete("/items/yellow-dress-9", headers={"X-API-Key": KEY}).status_code == 200
    assert client.get("/items/yellow-dress-9").status_code == 404
    with open_collection(location) as reopened:  # committed in Milvus, not only in this process
        assert "yellow-dress-9" not in reopened and len(reopened) == 24


def test_a_filter_of_many_values_is_bounded_and_quick(client):
    """10,000 filter values are refused at once, with the limit named; 1,000 (the limit, nearly
    all of them values no item has) are answered quickly."""
    import time

    many = client.post("/search", json={"item_id": "red-dress-0", "k": 5,
                                        "filters": {"colour": [f"c{n}" for n in range(10_000)]}})
    assert many.status_code in (400, 422) and "at most 1,000" in many.text
    started = time.perf_counter()
    bounded = client.post("/search", json={"item_id": "red-dress-0", "k": 5,
                                           "filters": {"colour": [f"c{n}" for n in range(999)] + ["blue"]}})
    assert bounded.status_code == 200 and time.perf_counter() - started < 5
    assert {h["metadata"]["colour"] for h in bounded.json()["results"]} == {"blue"}

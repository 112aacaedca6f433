"""Every route of the HTTP API, on a small real collection embedded by the default encoder."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import garment_image, jpeg_bytes
from vestis.api.app import create_app
from vestis.data import open_catalogue
from vestis.store.collection import Collection
from vestis.store.ingest import index_catalogue, open_or_create

pytestmark = pytest.mark.slow  # builds a collection with the real encoder

KEY = "s3cret-key"
RED, BLUE = (200, 30, 30), (30, 50, 200)


@pytest.fixture(scope="module")
def client(collection_copy, api_encoder):
    with TestClient(create_app(collection_copy, api_key=KEY, encoder=api_encoder, workers=2)) as c:
        yield c


def upload(image: Image.Image, name: str = "q.jpg") -> dict:
    return {"file": (name, jpeg_bytes(image), "image/jpeg")}


# ------------------------------------------------------------------------ search
def test_search_by_upload_ranks_same_colour_and_shape_first(client):
    r = client.post("/search", files=upload(garment_image(RED, "shirt", seed=7)), data={"k": "5"})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [h["id"] for h in body["results"]]
    assert len(ids) == 5 and ids[0].startswith("red-shirt")
    assert body["query"] == {"type": "image"} and body["candidates"] == 24
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9
    top = body["results"][0]
    assert top["metadata"]["colour"] == "red" and top["metadata"]["kind"] == "shirt"
    assert top["image_url"] == f"/images/{top['id']}"
    assert {"queue", "decode", "embed", "search", "fetch_metadata", "total"} <= set(body["timings_ms"])
    assert body["timings_ms"]["total"] >= body["timings_ms"]["embed"] > 0
    big = client.post("/search", files=upload(garment_image(RED, "shirt", size=(1200, 1600), seed=7))).json()
    assert big["timings_ms"]["decode"] > 0.05  # the decoding of 2 MP, which Engine.run does before it embeds


def test_an_upload_is_answered_as_the_engine_answers_its_bytes(client):
    from vestis.search.query import SearchQuery

    data = jpeg_bytes(garment_image(BLUE, "dress", seed=11))
    engine = client.app.state.service.engine
    answers = {}
    for weight in (0.0, 0.5):
        r = client.post("/search", files={"file": ("q.jpg", data, "image/jpeg")},
                        data={"k": "8", "color_weight": str(weight)})
        assert r.status_code == 200, r.text
        answers[weight] = [(h["id"], h["score"]) for h in r.json()["results"]]
        hits = engine.run(SearchQuery(image=data, k=8, color_weight=weight)).response.hits
        assert answers[weight] == [(h.id, round(h.score, 6)) for h in hits]
    assert answers[0.0] != answers[0.5]  # the colour term counts when weighted
    # without colour weight the query leaves out the colour descriptor; its embedding is the same
    plain, coloured = engine.query(image=data, colour=False), engine.query(image=data)
    assert plain.colour is None and coloured.colour is not None
    assert (plain.vector == coloured.vector).all()


def test_search_filters_lists_mean_either_value_and_keys_must_all_match(client):
    query = upload(garment_image(RED, "shirt", seed=7))
    r = client.post("/search", files=query, data={"k": "24", "filters": '{"colour": ["blue", "green"]}'})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 12 and {h["metadata"]["colour"] for h in results} == {"blue", "green"}
    r = client.post("/search", json={"item_id": "red-shirt-0", "k": 24, "filters": {"colour": "blue", "kind": ["dress"]}})
    results = r.json()["results"]
    assert sorted(h["id"] for h in results) == ["blue-dress-0", "blue-dress-1"]
    assert all(h["metadata"]["colour"] == "blue" and h["metadata"]["kind"] == "dress" for h in results)
    assert r.json()["candidates"] == 2


def test_search_by_item_leaves_it_out_and_pages(client):
    r = client.post("/search", json={"item_id": "green-dress-0", "k": 6})
    body = r.json()
    ids = [h["id"] for h in body["results"]]
    assert "green-dress-0" not in ids and ids[0] == "green-dress-1"
    assert body["query"] == {"type": "item", "item_id": "green-dress-0"} and body["candidates"] == 23
    page = client.post("/search", json={"item_id": "green-dress-0", "k": 3, "offset": 3}).json()
    assert [h["id"] for h in page["results"]] == ids[3:6]


def test_search_by_base64_and_data_url_give_the_upload_answer(client):
    data = jpeg_bytes(garment_image(BLUE, "trousers", seed=3))
    by_upload = client.post("/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "4"}).json()
    encoded = base64.b64encode(data).decode()
    for text in (encoded, "data:image/jpeg;base64," + encoded):
        r = client.post("/search", json={"image_base64": text, "k": 4})
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["results"]] == [h["id"] for h in by_upload["results"]]


def test_colour_weight_adds_colour_similarity(client):
    plain = client.post("/search", json={"item_id": "red-shirt-0", "k": 3}).json()["results"]
    fused = client.post("/search", json={"item_id": "red-shirt-0", "k": 3, "color_weight": 0.5}).json()["results"]
    assert fused[0]["id"] == plain[0]["id"] == "red-shirt-1"
    assert 0.0 < fused[0]["score"] - plain[0]["score"] <= 0.5 + 1e-6


def test_submit_rpf_shape_by_relative_and_absolute_path_and_by_id(client, shop_dir):
    r = client.post("/submit", params={"k": 3}, json={"img_path": "blue-shirt-1.jpg", "attrs": ""})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"ids", "similarities", "retrieval_times"}
    assert body["ids"][0] == "blue-shirt-1" and body["similarities"][0] == pytest.approx(1.0, abs=1e-4)
    assert len(body["ids"]) == len(body["similarities"]) == 3
    assert isinstance(body["retrieval_times"], float) and 0 < body["retrieval_times"] < 10
    absolute = client.post("/submit", params={"k": 3}, json={"img_path": str(shop_dir / "blue-shirt-1.jpg")}).json()
    assert absolute["ids"] == body["ids"]
    by_id = client.post("/submit", json={"img_path": "blue-shirt-1"}).json()
    assert "blue-shirt-1" not in by_id["ids"] and by_id["ids"][0] == "blue-shirt-0" and len(by_id["ids"]) == 10


# ------------------------------------------------------------------------ items
def test_get_item_and_its_image(client, shop_dir):
    r = client.get("/items/black-trousers-1")
    assert r.status_code == 200
    assert r.json() == {"id": "black-trousers-1", "image_url": "/images/black-trousers-1",
                        "similar_url": "/similar/black-trousers-1",
                        "metadata": {"colour": "black", "kind": "trousers", "name": "Black trousers no. 1"}}
    image = client.get("/images/black-trousers-1")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == (shop_dir / "black-trousers-1.jpg").read_bytes()
    again = client.get("/images/black-trousers-1", headers={"If-None-Match": image.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_thumbnail_fits_the_requested_size(client):
    r = client.get("/images/black-trousers-1", params={"size": 40})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.format == "JPEG" and max(im.size) == 40 and im.size == (30, 40)  # 120x160 scaled


def test_similar(client):
    r = client.get("/similar/red-dress-1", params={"k": 4, "color_weight": 0.2})
    assert r.status_code == 200, r.text
    ids = [h["id"] for h in r.json()["results"]]
    assert len(ids) == 4 and ids[0] == "red-dress-0" and "red-dress-1" not in ids


def test_add_then_search_then_delete_with_api_key(client, collection_copy):
    data = jpeg_bytes(garment_image((240, 200, 20), "dress", seed=11))
    r = client.post("/items", files={"file": ("y.jpg", data, "image/jpeg")},
                    data={"id": "yellow-dress-9", "metadata": '{"colour": "yellow", "kind": "dress"}'},
                    headers={"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    assert r.json()["metadata"] == {"colour": "yellow", "kind": "dress"}
    stored = collection_copy / "uploads" / "yellow-dress-9.jpg"
    assert stored.read_bytes() == data
    assert client.get("/images/yellow-dress-9").content == data
    hits = client.post("/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "1"}).json()["results"]
    assert hits[0]["id"] == "yellow-dress-9" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    info = client.get("/api/info").json()
    assert info["items"] == 25 and {"value": "yellow", "count": 1} in next(
        c["values"] for c in info["columns"] if c["name"] == "colour")

    conflict = client.post("/items", files={"file": ("y.jpg", data, "image/jpeg")}, data={"id": "yellow-dress-9"},
                           headers={"Authorization": f"Bearer {KEY}"})
    assert conflict.status_code == 409 and "already exists" in conflict.json()["detail"]

    r = client.delete("/items/yellow-dress-9", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json() == {"id": "yellow-dress-9", "removed": True}
    assert not stored.exists()
    assert client.get("/items/yellow-dress-9").status_code == 404
    hits = client.post("/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "3"}).json()["results"]
    assert "yellow-dress-9" not in [h["id"] for h in hits]
    with Collection.open(collection_copy) as reopened:  # committed to disk, not only in memory
        assert "yellow-dress-9" not in reopened and len(reopened) == 24


def test_add_generates_an_id_when_none_is_given(client):
    data = jpeg_bytes(garment_image((120, 60, 160), "shirt", seed=2))
    r = client.post("/items", files={"file": ("p.png", data, "image/jpeg")}, headers={"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    new_id = r.json()["id"]
    assert re.fullmatch(r"[0-9a-f]{16}", new_id) and r.json()["metadata"] == {}
    assert client.get(f"/items/{new_id}").status_code == 200
    assert client.delete(f"/items/{new_id}", headers={"X-API-Key": KEY}).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic czNjcmV0LWtleQ=="}])
def test_writes_need_the_api_key(client, headers):
    data = jpeg_bytes(garment_image(RED, "shirt"))
    r = client.post("/items", files={"file": ("x.jpg", data, "image/jpeg")}, data={"id": "sneaky"}, headers=headers)
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.delete("/items/red-shirt-0", headers=headers)
    assert r.status_code == 401
    assert client.get("/items/red-shirt-0").status_code == 200 and client.get("/items/sneaky").status_code == 404


# ------------------------------------------------------------------------ service routes
def test_healthz_and_info(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["items"] == 24 and health["startup_s"] > 0
    info = client.get("/api/info").json()
    assert info["items"] == 24 and info["encoder"] == "efficientnet-lite0" and info["dim"] == 1280
    assert info["attributes"] == [] and info["colour"] is True and info["writes_need_api_key"] is True
    assert info["index_setting"] == "auto" and info["index"] == "exact"  # what `auto` resolved to at 24 items
    columns = {c["name"]: c for c in info["columns"]}
    assert set(columns) == {"colour", "kind", "name"}
    assert columns["colour"]["filterable"] and columns["kind"]["filterable"] and not columns["name"]["filterable"]
    assert sorted(v["value"] for v in columns["kind"]["values"]) == ["dress", "shirt", "trousers"]
    assert all(v["count"] == 8 for v in columns["kind"]["values"])


def test_metrics_count_requests_by_route_and_status(client):
    client.get("/items/red-shirt-0")
    client.get("/items/no-such-item")
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert "vestis_encoder_batches" not in text  # only a batching server has encoder batches to count

    def value(pattern: str) -> float:
        match = re.search(re.escape(pattern) + r" ([0-9.e+]+)", text)
        assert match, pattern
        return float(match.group(1))

    route = '/items/{item_id:path}'
    assert value(f'vestis_http_requests_total{{method="GET",route="{route}",status="404"}}') >= 1
    assert value(f'vestis_http_requests_total{{method="GET",route="{route}",status="200"}}') >= 2
    assert value(f'vestis_http_request_duration_seconds_count{{method="GET",route="{route}"}}') >= 3
    assert value(f'vestis_http_request_duration_seconds_bucket{{le="+Inf",method="GET",route="{route}"}}') >= 3
    assert value("vestis_collection_items") == 24
    assert "/items/no-such-item" not in text  # labelled by template, never by raw path


def test_docs_work_offline_and_spec_lists_every_route(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert not re.search(r"(src|href)=\"https?://", docs.text)
    for asset in re.findall(r"(?:src|href)=\"(/[^\"]+)\"", docs.text):
        assert client.get(asset).status_code == 200, asset
    spec = client.get("/openapi.json").json()
    assert {"/search", "/submit", "/items", "/items/{item_id}", "/images/{item_id}",
            "/similar/{item_id}", "/healthz", "/metrics", "/api/info"} <= set(spec["paths"])
    assert set(spec["paths"]["/search"]["post"]["requestBody"]["content"]) == {"application/json",
                                                                                 "multipart/form-data"}


def test_web_page_and_its_assets_are_served_without_external_urls(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", page.text)
    assert sorted(assets) == ["/static/app.js", "/static/favicon.svg", "/static/style.css"]
    for text in [page.text] + [client.get(a).text for a in assets]:
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg\")", text)  # the SVG namespace is no fetch
        assert "@import" not in text and "fonts." not in text


def test_unexpected_errors_answer_500_and_the_server_keeps_serving(collection_copy, api_encoder, monkeypatch):
    app = create_app(collection_copy, encoder=api_encoder, workers=1)
    with TestClient(app, raise_server_exceptions=False) as c:
        monkeypatch.setattr(app.state.service, "get_item", lambda item_id: 1 / 0)
        r = c.get("/items/red-shirt-0")
        assert r.status_code == 500 and r.json() == {"detail": "internal error (logged on the server)"}
        monkeypatch.undo()
        assert c.get("/items/red-shirt-0").status_code == 200
        assert c.get("/healthz").json()["status"] == "ok"


def test_default_roots_are_the_catalogue_folder(client, shop_dir):
    assert client.app.state.service.roots == [Path(shop_dir).resolve()]


def test_item_ids_with_slashes_and_default_root_of_a_nested_catalogue(tmp_path, api_encoder):
    """Folder catalogues name items by relative path ('tops/red'): every item route takes such ids,
    and the catalogue folder (not the one subfolder all files sit in) is the img_path root."""
    shop = tmp_path / "nested"
    (shop / "images" / "tops").mkdir(parents=True)
    (shop / "images" / "tops" / "red.jpg").write_bytes(jpeg_bytes(garment_image(RED, "shirt")))
    (shop / "images" / "tops" / "blue.jpg").write_bytes(jpeg_bytes(garment_image(BLUE, "shirt")))
    coll = open_or_create(tmp_path / "coll", api_encoder, None)
    index_catalogue(coll, open_catalogue(shop), api_encoder, progress=False)
    coll.close()
    with TestClient(create_app(tmp_path / "coll", encoder=api_encoder, workers=1)) as c:
        assert c.app.state.service.roots == [shop.resolve()]
        hits = c.post("/search", files=upload(garment_image(RED, "shirt", seed=3)), data={"k": "2"}).json()["results"]
        assert [h["id"] for h in hits] == ["images/tops/red", "images/tops/blue"]
        assert hits[0]["image_url"] == "/images/images%2Ftops%2Fred"
        assert c.get(hits[0]["image_url"]).content == (shop / "images" / "tops" / "red.jpg").read_bytes()
        assert c.get("/items/images/tops/red").json()["id"] == "images/tops/red"
        similar = c.get("/similar/images%2Ftops%2Fblue").json()["results"]
        assert [h["id"] for h in similar] == ["images/tops/red"]
        by_path = c.post("/submit", params={"k": 1}, json={"img_path": "images/tops/blue.jpg"}).json()
        assert by_path["ids"] == ["images/tops/blue"]


def test_item_routes_are_unambiguous_for_ids_that_look_like_sub_resources(tmp_path, api_encoder):
    """Items 'shoes' and 'shoes/image' (and 'shoes/similar'): each id's metadata, image and
    neighbours are its own, whether '/' is sent as is or as %2F; the old sub-resource paths
    redirect when no item has the whole path as its id."""
    shop = tmp_path / "ids"
    (shop / "shoes").mkdir(parents=True)
    images = {"shoes": garment_image(RED, "shirt"), "shoes/image": garment_image(BLUE, "trousers"),
              "shoes/similar": garment_image((30, 160, 60), "dress")}
    for item_id, image in images.items():
        (shop / f"{item_id}.jpg").write_bytes(jpeg_bytes(image))
    coll = open_or_create(tmp_path / "coll", api_encoder, None)
    index_catalogue(coll, open_catalogue(shop), api_encoder, progress=False)
    coll.close()
    with TestClient(create_app(tmp_path / "coll", encoder=api_encoder, workers=1)) as c:
        for item_id in images:
            for path in (item_id, item_id.replace("/", "%2F")):
                r = c.get(f"/items/{path}")
                assert r.status_code == 200 and r.json()["id"] == item_id, (path, r.text)
            body = c.get(f"/items/{item_id}").json()
            assert c.get(body["image_url"]).content == (shop / f"{item_id}.jpg").read_bytes()
            assert c.get(f"/images/{item_id}").content == (shop / f"{item_id}.jpg").read_bytes()
            similar = c.get(body["similar_url"], params={"k": 5}).json()["results"]
            assert item_id not in [h["id"] for h in similar] and len(similar) == 2
        # Old-style paths still work where no item has the whole path as its id.
        old = c.get("/items/shoes%2Fimage/image", params={"size": 32}, follow_redirects=False)
        assert old.status_code == 308 and old.headers["location"] == "/images/shoes%2Fimage?size=32"
        assert c.get("/items/shoes%2Fimage/similar").json()["query"] == {"type": "item", "item_id": "shoes/image"}
        assert c.get("/items/nothing/image").status_code == 404


def test_browse_pages_through_the_catalogue(client):
    first = client.get("/items", params={"limit": 10}).json()
    assert first["total"] == 24 and first["offset"] == 0 and len(first["items"]) == 10
    rest = client.get("/items", params={"offset": 10, "limit": 100}).json()["items"]
    ids = [it["id"] for it in first["items"] + rest]
    assert len(ids) == len(set(ids)) == 24 and ids[0] == "black-dress-0"
    assert first["items"][0]["image_url"] == "/images/black-dress-0"
    assert first["items"][0]["metadata"]["kind"] == "dress"
    assert client.get("/items", params={"offset": 24}).json()["items"] == []
    too_many = client.get("/items", params={"limit": 101})
    assert too_many.status_code == 422 and "less than or equal to 100" in too_many.text
    assert client.get("/items", params={"limit": "true"}).status_code == 422
    assert client.get("/items", params={"offset": 10**30}).status_code == 422


def test_a_full_disk_during_an_add_is_507_and_leaves_nothing_behind(client, collection_copy, monkeypatch):
    import sqlite3

    def full(self, items):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Collection, "upsert", full)
    r = client.post("/items", files=upload(garment_image(BLUE, "dress")), data={"id": "no-room"},
                    headers={"X-API-Key": KEY})
    assert r.status_code == 507, r.text
    assert r.json()["detail"].startswith(f"the disk holding {collection_copy} is full (database or disk is full)")
    monkeypatch.undo()
    assert client.get("/items/no-room").status_code == 404
    assert not list((collection_copy / "uploads").glob("no-room.*"))

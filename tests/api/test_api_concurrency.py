"""Concurrent adds and searches: no item is lost, none is ever seen half-written."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import COLOURS, COPIES, SHAPES
from tests.conftest import garment_image, jpeg_bytes
from vestis.api.app import create_app
from vestis.store.collection import Collection

pytestmark = pytest.mark.slow

ADDERS, ADDS_EACH, SEARCHERS = 3, 4, 3


def test_concurrent_adds_and_searches(collection_copy, api_encoder):
    expected = {f"{c}-{s}-{n}": {"colour": c, "kind": s, "name": f"{c.title()} {s} no. {n}"}
                for c in COLOURS for s in SHAPES for n in range(COPIES)}
    images: dict[str, bytes] = {}
    for a in range(ADDERS):
        for i in range(ADDS_EACH):
            item_id = f"added-{a}-{i}"
            rgb = (40 + 60 * a, 20 + 50 * i, 200 - 40 * i)
            images[item_id] = jpeg_bytes(garment_image(rgb, SHAPES[(a + i) % 3], seed=100 + 10 * a + i))
            expected[item_id] = {"adder": str(a), "n": i, "kind": SHAPES[(a + i) % 3]}
    errors: list[str] = []
    adding = threading.Event()
    adding.set()
    searches = [0]

    with TestClient(create_app(collection_copy, encoder=api_encoder, workers=2)) as client:

        def add(a: int) -> None:
            for i in range(ADDS_EACH):
                item_id = f"added-{a}-{i}"
                r = client.post("/items", files={"file": (f"{item_id}.jpg", images[item_id], "image/jpeg")},
                                data={"id": item_id, "metadata": f'{{"adder": "{a}", "n": {i}, '
                                                                 f'"kind": "{expected[item_id]["kind"]}"}}'})
                if r.status_code != 201:
                    errors.append(f"add {item_id}: {r.status_code} {r.text}")

        def search(s: int) -> None:
            query = jpeg_bytes(garment_image((90, 90, 160), SHAPES[s % 3], seed=s))
            while adding.is_set():
                r = client.post("/search", files={"file": ("q.jpg", query, "image/jpeg")}, data={"k": "40"})
                if r.status_code != 200:
                    errors.append(f"search: {r.status_code} {r.text}")
                    return
                hits = r.json()["results"]
                searches[0] += 1
                for hit in hits:  # every hit is a whole item: known id, all of its metadata
                    if expected.get(hit["id"]) != hit["metadata"]:
                        errors.append(f"half-written or unknown hit {hit}")
                ids = [h["id"] for h in hits]
                if len(ids) != len(set(ids)):
                    errors.append(f"duplicate hits {ids}")

        adders = [threading.Thread(target=add, args=(a,)) for a in range(ADDERS)]
        searchers = [threading.Thread(target=search, args=(s,)) for s in range(SEARCHERS)]
        for t in searchers + adders:
            t.start()
        for t in adders:
            t.join(timeout=120)
        adding.clear()
        for t in searchers:
            t.join(timeout=60)
        assert not errors, errors[:5]
        assert searches[0] >= SEARCHERS  # the searches really overlapped the adds

        total = 24 + ADDERS * ADDS_EACH
        assert client.get("/healthz").json()["items"] == total
        for item_id, data in images.items():
            assert client.get(f"/items/{item_id}").json()["metadata"] == expected[item_id]
            assert client.get(f"/images/{item_id}").content == data
            top = client.post("/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "1"}).json()
            assert top["results"][0]["id"] == item_id and top["results"][0]["score"] > 0.999
        everything = client.post("/search", json={"item_id": "red-shirt-0", "k": 100}).json()
        assert everything["candidates"] == total - 1 and len(everything["results"]) == total - 1

    with Collection.open(collection_copy) as reopened:  # all of it committed, caches saved at shutdown
        assert len(reopened) == total and all(item_id in reopened for item_id in images)
        assert reopened.table().n_alive == total


def test_batched_server_answers_concurrent_uploads_as_the_unbatched_one(collection_copy, api_encoder):
    queries = [jpeg_bytes(garment_image((60 + 20 * s, 90, 160 - 15 * s), SHAPES[s % 3], seed=50 + s))
               for s in range(8)]

    def answers(client: TestClient) -> list[list[tuple[str, float]]]:
        out: list[list[tuple[str, float]]] = [[] for _ in queries]

        def ask(i: int) -> None:
            r = client.post("/search", files={"file": ("q.jpg", queries[i], "image/jpeg")}, data={"k": "5"})
            assert r.status_code == 200, r.text
            out[i] = [(h["id"], h["score"]) for h in r.json()["results"]]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(queries))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        return out

    with TestClient(create_app(collection_copy, encoder=api_encoder, workers=2)) as client:
        plain = answers(client)
    app = create_app(collection_copy, encoder=api_encoder, batch=4)
    with TestClient(app) as client:
        batched = answers(client)
        metrics = client.get("/metrics").text
    encoder = app.state.service.engine.encoder
    stats = encoder.batcher.stats
    assert stats.items == len(queries) + 1  # every upload (and the warm-up) went through it
    assert f"vestis_encoder_batches_total {stats.batches:.1f}" in metrics  # the batch sizes formed, served
    assert f"vestis_encoder_batched_images_total {stats.items:.1f}" in metrics
    encoder.close()
    for mine, theirs in zip(batched, plain, strict=True):
        assert [i for i, _ in mine] == [i for i, _ in theirs]
        assert [s for _, s in mine] == pytest.approx([s for _, s in theirs], abs=1e-5)


def test_a_batching_server_fails_only_the_bad_upload(collection_copy, api_encoder):
    good = [jpeg_bytes(garment_image((50 + 25 * s, 80, 170 - 20 * s), SHAPES[s % 3], seed=70 + s)) for s in range(6)]
    uploads = good[:3] + [b"not an image at all"] + good[3:]
    statuses: list[int] = [0] * len(uploads)
    app = create_app(collection_copy, encoder=api_encoder, batch=4)
    with TestClient(app) as client:

        def ask(i: int) -> None:
            r = client.post("/search", files={"file": ("q.jpg", uploads[i], "image/jpeg")}, data={"k": "3"})
            statuses[i] = r.status_code

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(uploads))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    app.state.service.engine.encoder.close()
    assert statuses == [200, 200, 200, 422, 200, 200, 200]  # the bad one never reaches the shared encoder run

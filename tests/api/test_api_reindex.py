"""POST /reindex re-embeds the served collection in the background while searches keep answering;
GET /reindex follows it; bad requests are 4xx, never 500."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from vestis.api.app import create_app

pytestmark = pytest.mark.slow
NEW = "efficientnet-lite0-int8"


def wait_done(client: TestClient, shop_dir, searches: list[int]) -> dict:
    """Poll GET /reindex, searching by image between polls (each answer's status recorded)."""
    for _ in range(600):
        status = client.get("/reindex").json()
        if status["state"] != "running":
            return status
        with open(shop_dir / "red-shirt-0.jpg", "rb") as f:
            searches.append(client.post("/search", files={"file": ("q.jpg", f, "image/jpeg")}).status_code)
        time.sleep(0.05)
    raise AssertionError("the reindex did not finish")


def test_reindex_in_the_background_while_searching(collection_copy, shop_dir, api_encoder):
    with TestClient(create_app(collection_copy, encoder=api_encoder, api_key="k")) as client:
        key = {"X-API-Key": "k"}
        assert client.get("/reindex").json()["state"] == "idle"
        assert client.post("/reindex", json={"encoder": NEW}).status_code == 401
        for body, status in [({}, 400), ({"encoder": NEW, "rollback": True}, 400), ({"encoder": "nope"}, 400),
                             ({"encoder": "efficientnet-lite0"}, 409), ({"rollback": True}, 409),
                             ({"encoder": "/etc/model.onnx"}, 403), ({"encoder": 3}, 422)]:
            answer = client.post("/reindex", json=body, headers=key)
            assert answer.status_code == status, (body, answer.text)
            assert answer.json()["detail"]
        started = client.post("/reindex", json={"encoder": NEW, "keep_old": True}, headers=key)
        assert started.status_code == 202 and started.json()["state"] == "running"
        searches: list[int] = []
        status = wait_done(client, shop_dir, searches)
        assert status["state"] == "done", status
        assert status["report"]["items"] == 24 and status["done"] == status["total"] == 24
        assert set(searches) <= {200}
        info = client.get("/api/info").json()
        with open(shop_dir / "red-shirt-0.jpg", "rb") as f:
            hits = client.post("/search", files={"file": ("q.jpg", f, "image/jpeg")}).json()["results"]
        assert hits[0]["id"] == "red-shirt-0" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
        assert client.get("/api/info").json()["encoder"] == NEW, info

        assert client.post("/reindex", json={"rollback": True}, headers=key).status_code == 202
        assert wait_done(client, shop_dir, searches)["state"] == "done"
        assert client.get("/api/info").json()["encoder"] == "efficientnet-lite0"

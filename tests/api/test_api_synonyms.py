"""GET and PUT /synonyms: a collection's own words for word search; bad files refused (422) with the
stored synonyms kept; the rewrite shown in the response's query.understood."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from vestis.api.app import create_app

pytestmark = pytest.mark.slow  # the real image encoder

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def client(collection_copy, api_encoder):
    with TestClient(create_app(collection_copy, api_key=KEY, encoder=api_encoder, workers=2)) as c:
        yield c


def put(client, data: bytes, key: str | None = KEY):
    return client.put("/synonyms", files={"file": ("mine.txt", data, "text/plain")},
                      headers={"X-API-Key": key} if key else {})


def test_synonyms_are_stored_used_and_bad_files_refused(client):
    assert client.get("/synonyms").json() == {"text": "", "entries": 0}
    assert put(client, b"scarlet => red\n", key=None).status_code == 401
    stored = put(client, b"scarlet, crimson => red   # our shoppers' words\n")
    assert stored.status_code == 200, stored.text
    assert stored.json()["entries"] == 1 and client.get("/synonyms").json()["entries"] == 1
    found = client.post("/search", json={"text": "scarlet shirt", "mode": "keyword", "k": 2})
    assert sorted(h["id"] for h in found.json()["results"]) == ["red-shirt-0", "red-shirt-1"]
    assert "rewritten: scarlet -> red" in found.json()["query"]["understood"]
    typo = client.post("/search", json={"text": "shirrt", "mode": "keyword", "k": 2}).json()
    assert "shirrt -> shirt (spelling)" in typo["query"]["understood"]
    for bad, message in [(b"a => b\nb => a\n", "cycle"), (b"red, r\xffd\n", "not UTF-8"),
                         (b"red, , blue\n", "empty word"), (b", ".join(b"w%d" % i for i in range(10_000)), "characters"),
                         (b"x" * 1_000_000, "characters")]:
        refused = put(client, bad)
        assert refused.status_code in (413, 422) and (refused.status_code == 413 or message in refused.text)
        assert client.get("/synonyms").json()["text"].startswith("scarlet, crimson => red")

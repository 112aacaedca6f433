"""Bad input and safety: every refusal has its 4xx status and a clear message, never a 500, and the
server answers normally right after each one."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import garment_image, jpeg_bytes
from vestis.api.app import create_app

pytestmark = pytest.mark.slow  # builds a collection with the real encoder

LIMIT = 300_000  # upload limit of this module's server (bytes)


@dataclass
class Env:
    client: TestClient
    root: Path
    outside: Path
    image: bytes
    bomb: bytes
    big: bytes  # 20 MP: within the CLI's pixel limit, over the server's


@pytest.fixture(scope="module")
def env(collection_copy, api_encoder, tmp_path_factory) -> Env:
    """A server whose only allowed root holds an image, links in and out, and a text file."""
    root = tmp_path_factory.mktemp("root")
    outside = tmp_path_factory.mktemp("outside")
    image = jpeg_bytes(garment_image((200, 30, 30), "shirt", seed=3))
    (root / "good.jpg").write_bytes(image)
    (root / "notes.txt").write_text("not an image")
    (outside / "secret.jpg").write_bytes(image)
    os.symlink(root / "good.jpg", root / "link-in.jpg")
    os.symlink(outside / "secret.jpg", root / "link-out.jpg")
    os.symlink(outside, root / "escape")
    buf = io.BytesIO()
    Image.new("L", (7000, 6000)).save(buf, format="PNG")  # 42 MP, a few tens of kB
    big = io.BytesIO()
    Image.new("L", (5000, 4000)).save(big, format="PNG")
    app = create_app(collection_copy, allow_roots=[root], max_upload_bytes=LIMIT, encoder=api_encoder, workers=2)
    with TestClient(app) as client:
        yield Env(client, root, outside, image, buf.getvalue(), big.getvalue())


HUGE_INT = '{"a": ' + "1" * 5000 + "}"
DEEP = "[" * 50_000


def _multipart(data: bytes, **fields: str) -> dict:
    return {"files": {"file": ("q.jpg", data, "image/jpeg")}, "data": fields}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _chunks(total: int):
    for _ in range(total // 65536 + 1):
        yield b"x" * 65536


Call = Callable[[Env], object]
CASES: dict[str, tuple[Call, int, str]] = {
    # not an image, truncated, decompression bomb
    "search-not-image": (lambda e: e.client.post("/search", **_multipart(b"hello, I am text")), 422, "not an image"),
    "search-truncated": (lambda e: e.client.post("/search", **_multipart(e.image[: len(e.image) // 2])),
                         422, "truncated"),
    "search-bomb": (lambda e: e.client.post("/search", **_multipart(e.bomb)), 422, "too large: 7000x6000"),
    "search-bomb-base64": (lambda e: e.client.post("/search", json={"image_base64": _b64(e.bomb)}), 422, "too large"),
    "search-empty-file": (lambda e: e.client.post("/search", **_multipart(b"")), 422, "not an image"),
    "add-not-image": (lambda e: e.client.post("/items", **_multipart(b"GIF89a garbage")), 422, "not an image"),
    "add-bomb": (lambda e: e.client.post("/items", **_multipart(e.bomb)), 422, "too large"),
    "add-over-the-upload-pixel-limit": (lambda e: e.client.post("/items", **_multipart(e.big)), 422,
                                        "too large: 5000x4000 > 16,000,000 pixels"),
    "search-over-the-upload-pixel-limit": (lambda e: e.client.post("/search", **_multipart(e.big)), 422,
                                           "too large: 5000x4000 > 16,000,000 pixels"),
    "submit-not-image": (lambda e: e.client.post("/submit", json={"img_path": "notes.txt"}), 422, "not an image"),
    # size limits: while reading, declared, streamed, decoded
    "search-over-limit": (lambda e: e.client.post("/search", **_multipart(b"\xff" * (LIMIT + 1))), 413,
                          "limit is 300,000 bytes"),
    "add-over-limit": (lambda e: e.client.post("/items", **_multipart(b"\xff" * (LIMIT + 1))), 413, "limit"),
    "base64-over-limit": (lambda e: e.client.post("/search", json={"image_base64": _b64(b"\0" * (LIMIT + 1))}),
                          413, "limit is 300,000 bytes"),
    "declared-body-over-limit": (lambda e: e.client.post("/search", content=b"{" * (2 * LIMIT),
                                                         headers={"Content-Type": "application/json"}),
                                 413, "request body is larger"),
    "streamed-body-over-limit": (lambda e: e.client.post("/search", content=_chunks(2 * LIMIT),
                                                         headers={"Content-Type": "application/json"}),
                                 413, "request body is larger"),
    # attributes
    "submit-unknown-attribute": (lambda e: e.client.post("/submit", json={"img_path": "good.jpg",
                                                                          "attrs": "sleeve length; collar design"}),
                                 422, "valid attributes: none (build an attribute index"),
    "search-unknown-attribute": (lambda e: e.client.post("/search", json={"item_id": "red-shirt-0",
                                                                          "attrs": ["neckline"]}),
                                 422, "valid attributes: none (build an attribute index"),
    "multipart-unknown-attribute": (lambda e: e.client.post("/search", **_multipart(e.image, attrs="pattern")),
                                    422, "valid attributes: none (build an attribute index"),
    # img_path outside the roots, .., symlinks out, URLs
    "img-path-dotdot": (lambda e: e.client.post("/submit", json={"img_path": "../outside/secret.jpg"}), 403, ".."),
    "img-path-dotdot-inside": (lambda e: e.client.post("/submit", json={"img_path": f"{e.root}/x/../good.jpg"}),
                               403, ".."),
    "img-path-absolute-outside": (lambda e: e.client.post("/submit", json={"img_path": str(e.outside / "secret.jpg")}),
                                  403, "outside the folders"),
    "img-path-etc-passwd": (lambda e: e.client.post("/submit", json={"img_path": "/etc/passwd"}), 403, "outside"),
    "img-path-symlink-out": (lambda e: e.client.post("/submit", json={"img_path": "link-out.jpg"}), 403, "outside"),
    "img-path-symlinked-dir-out": (lambda e: e.client.post("/submit", json={"img_path": "escape/secret.jpg"}),
                                   403, "outside"),
    "img-path-missing": (lambda e: e.client.post("/submit", json={"img_path": "missing.jpg"}), 404,
                         "neither an item id nor an image file"),
    "img-path-url": (lambda e: e.client.post("/submit", json={"img_path": "http://127.0.0.1:9/a.jpg"}), 400,
                     "does not fetch URLs"),
    "img-path-file-url": (lambda e: e.client.post("/submit", json={"img_path": "file:///etc/passwd"}), 400,
                          "does not fetch URLs"),
    "img-path-nul": (lambda e: e.client.post("/submit", json={"img_path": "good.jpg\u0000.png"}), 400, "NUL"),
    "img-path-empty": (lambda e: e.client.post("/submit", json={"img_path": ""}), 422, "at least 1 character"),
    # k, offset and colour weight out of range
    "submit-k-zero": (lambda e: e.client.post("/submit", params={"k": 0}, json={"img_path": "good.jpg"}), 422,
                      "greater than or equal to 1"),
    "submit-k-too-big": (lambda e: e.client.post("/submit", params={"k": 1001}, json={"img_path": "good.jpg"}), 422,
                         "less than or equal to 1000"),
    "search-k-zero": (lambda e: e.client.post("/search", json={"item_id": "red-shirt-0", "k": 0}), 422,
                      "greater than or equal to 1"),
    "search-k-too-big": (lambda e: e.client.post("/search", json={"item_id": "red-shirt-0", "k": 5000}), 422,
                         "less than or equal to 1000"),
    "multipart-k-not-a-number": (lambda e: e.client.post("/search", **_multipart(e.image, k="ten")), 422,
                                 "valid integer"),
    "search-negative-offset": (lambda e: e.client.post("/search", json={"item_id": "red-shirt-0", "offset": -1}),
                               422, "greater than or equal to 0"),
    "search-negative-colour": (lambda e: e.client.post("/search", json={"item_id": "red-shirt-0",
                                                                        "color_weight": -1}), 422, "greater than"),
    "similar-k-zero": (lambda e: e.client.get("/similar/red-shirt-0", params={"k": 0}), 422, "greater"),
    "thumbnail-too-small": (lambda e: e.client.get("/images/red-shirt-0", params={"size": 5}), 422, "greater"),
    # unknown items
    "get-unknown-item": (lambda e: e.client.get("/items/no-such"), 404, "no item 'no-such'"),
    "image-unknown-item": (lambda e: e.client.get("/images/no-such"), 404, "no item"),
    "similar-unknown-item": (lambda e: e.client.get("/similar/no-such"), 404, "no item"),
    "delete-unknown-item": (lambda e: e.client.delete("/items/no-such"), 404, "no item"),
    "search-unknown-item": (lambda e: e.client.post("/search", json={"item_id": "no-such"}), 404, "no item"),
    # malformed requests
    "search-unknown-filter-column": (lambda e: e.client.post("/search", json={"item_id": "red-shirt-0",
                                                                              "filters": {"fabric": ["silk"]}}),
                                     422, "unknown filter column(s) 'fabric'; valid columns: ['colour', 'kind', 'name']"),
    "multipart-filters-not-json": (lambda e: e.client.post("/search", **_multipart(e.image, filters="colour=red")),
                                   422, "filters must be JSON"),
    "search-both-queries": (lambda e: e.client.post("/search", json={"item_id": "red-shirt-0",
                                                                     "image_base64": _b64(e.image)}),
                            422, "give at most one of an image and an item id"),
    "search-no-query": (lambda e: e.client.post("/search", json={"k": 3}), 422,
                        "give an image, an item id, a text or positive examples"),
    "search-bad-base64": (lambda e: e.client.post("/search", json={"image_base64": "not base64!"}), 422,
                          "not valid base64"),
    "search-bad-json": (lambda e: e.client.post("/search", content=b'{"item_id": ',
                                                headers={"Content-Type": "application/json"}), 422, "json"),
    "search-unknown-field": (lambda e: e.client.post("/search", json={"item_id": "red-shirt-0", "kk": 1}), 422,
                             "Extra inputs are not permitted"),
    "search-wrong-content-type": (lambda e: e.client.post("/search", content=b"item_id=x",
                                                          headers={"Content-Type": "text/plain"}), 415,
                                  "send JSON or multipart/form-data"),
    "multipart-repeated-field": (lambda e: e.client.post("/search", files=[("file", ("q.jpg", e.image)),
                                                                          ("k", (None, "3")), ("k", (None, "4"))]),
                                 422, "form field 'k' is given more than once"),
    "multipart-without-file": (lambda e: e.client.post("/search", files={"other": ("a", b"a")}, data={"k": "3"}),
                               422, "'file' field"),
    "add-metadata-not-json": (lambda e: e.client.post("/items", **_multipart(e.image, metadata="colour=red")), 422,
                              "metadata must be a JSON object"),
    "add-metadata-list": (lambda e: e.client.post("/items", **_multipart(e.image, metadata="[1, 2]")), 422,
                          "metadata must be a JSON object"),
    "add-metadata-nested": (lambda e: e.client.post("/items", **_multipart(e.image, metadata='{"a": {"b": 1}}')),
                            422, "must be a string, number, boolean or null"),
    "add-metadata-nan": (lambda e: e.client.post("/items", **_multipart(e.image, metadata='{"price": NaN}')), 422,
                         "must be a finite number"),
    # extreme JSON in form fields: Python's int digit limit and its recursion limit
    "add-metadata-huge-integer": (lambda e: e.client.post("/items", **_multipart(e.image, metadata=HUGE_INT)), 422,
                                  "a number in it is too long"),
    "add-metadata-deeply-nested": (lambda e: e.client.post("/items", **_multipart(e.image, metadata=DEEP)), 422,
                                   "nested too deeply"),
    "multipart-filters-huge-integer": (lambda e: e.client.post("/search", **_multipart(e.image, filters=HUGE_INT)),
                                       422, "a number in it is too long"),
    "multipart-filters-deeply-nested": (lambda e: e.client.post("/search", **_multipart(e.image, filters=DEEP)),
                                        422, "nested too deeply"),
    "search-json-huge-integer": (lambda e: e.client.post("/search", content=b'{"item_id": "x", "k": ' + b"9" * 5000
                                                         + b"}", headers={"Content-Type": "application/json"}),
                                 422, "json"),
    "search-json-deeply-nested": (lambda e: e.client.post("/search", content=b'{"filters": ' + DEEP.encode() + b"}",
                                                          headers={"Content-Type": "application/json"}), 422, "json"),
    # strict numbers: a boolean is no count, and a weight must be finite
    "search-k-true": (lambda e: e.client.post("/search", json={"item_id": "red-shirt-0", "k": True}), 422,
                      "valid integer"),
    "search-offset-true": (lambda e: e.client.post("/search", json={"item_id": "red-shirt-0", "offset": True}), 422,
                           "valid integer"),
    "search-colour-nan": (lambda e: e.client.post("/search", content=b'{"item_id": "red-shirt-0", "color_weight": NaN}',
                                                  headers={"Content-Type": "application/json"}), 422, "finite number"),
    "search-colour-infinity": (lambda e: e.client.post("/search", content=b'{"item_id": "red-shirt-0", '
                                                       b'"color_weight": Infinity}',
                                                       headers={"Content-Type": "application/json"}), 422, "finite"),
    "multipart-colour-nan": (lambda e: e.client.post("/search", **_multipart(e.image, color_weight="nan")), 422,
                             "finite number"),
    "similar-colour-inf": (lambda e: e.client.get("/similar/red-shirt-0", params={"color_weight": "inf"}), 422,
                           "finite number"),
    "add-bad-id": (lambda e: e.client.post("/items", **_multipart(e.image, id="../../evil")), 422,
                   "item id must be"),
    "add-without-file": (lambda e: e.client.post("/items", data={"id": "x"}), 422, "file"),
}


def _detail(response) -> str:
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else " ".join(f"{d['loc']} {d['msg']}" for d in detail)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_clearly_and_the_server_keeps_serving(env, case):
    call, status, fragment = CASES[case]
    response = call(env)
    assert response.status_code == status, response.text
    assert fragment.lower() in _detail(response).lower()
    # ... and the server still answers normally
    assert env.client.get("/healthz").json()["items"] == 24
    again = env.client.post("/submit", params={"k": 1}, json={"img_path": "good.jpg"})
    assert again.status_code == 200 and again.json()["similarities"][0] > 0.9


def test_symlink_inside_the_root_is_allowed(env):
    direct = env.client.post("/submit", json={"img_path": "good.jpg"}).json()
    linked = env.client.post("/submit", json={"img_path": "link-in.jpg"})
    assert linked.status_code == 200 and linked.json()["ids"] == direct["ids"]
    absolute = env.client.post("/submit", json={"img_path": str(env.root / "good.jpg")})
    assert absolute.json()["ids"] == direct["ids"]


def test_nothing_was_written_by_refused_adds(env, collection_copy):
    uploads = collection_copy / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    assert env.client.get("/api/info").json()["items"] == 24


def _series(metrics_text: str) -> list[str]:
    return [line for line in metrics_text.splitlines() if line.startswith("vestis_http_requests_total{")]


def test_metrics_labels_stay_few_whatever_the_requests(env):
    """Random methods, paths and ids must not add a metrics series each (the tester grew /metrics
    from 13 KB to 4.7 MB this way): methods outside the standard ones count as 'other', paths as
    their route template."""
    import random

    rng = random.Random(0)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for n in range(60):
        method = "".join(rng.choices(letters, k=8))
        env.client.request(method, f"/items/random-{n}")
        env.client.request(method, f"/no/such/path/{n}")
        env.client.get(f"/items/random-{n}")
    series = _series(env.client.get("/metrics").text)
    methods = {line.split('method="')[1].split('"')[0] for line in series}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert "other" in methods
    assert not any("random-" in line or "/no/such" in line for line in series)
    assert len(series) < 60, series


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_api_key_is_refused_not_taken_for_none(collection_copy, api_encoder, key):
    from vestis.errors import VestisError

    with pytest.raises(VestisError, match="the API key is empty"):
        create_app(collection_copy, api_key=key, encoder=api_encoder)

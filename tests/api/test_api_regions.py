"""Shop the look through the API and the CLI: a photo of a person is searched per garment region
(a real photo: the portrait of Grace Hopper that matplotlib ships), a photo without a person is
searched whole as before, and odd images get a clear answer."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import matplotlib.cbook
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import garment_image, jpeg_bytes
from vestis.api.app import create_app
from vestis.encoders import regions

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not regions.models_installed(), reason="pose models not installed (make install)")]


@pytest.fixture(scope="module")
def portrait() -> bytes:
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return f.read()


@pytest.fixture(scope="module")
def client(collection_copy, api_encoder):
    with TestClient(create_app(collection_copy, encoder=api_encoder, workers=2)) as c:
        yield c


def search(client, image: bytes, **fields) -> dict:
    r = client.post("/search", files={"file": ("q.jpg", image, "image/jpeg")},
                    data={key: str(value) for key, value in fields.items()})
    assert r.status_code == 200, r.text
    return r.json()


def ids(results: list[dict]) -> list[str]:
    return [hit["id"] for hit in results]


def test_a_photo_of_a_person_is_searched_per_region(client, portrait):
    width, height = Image.open(io.BytesIO(portrait)).size
    whole = search(client, portrait, k=5)
    assert whole["regions"] is None and len(whole["results"]) == 5
    look = search(client, portrait, k=5, region="auto")
    found = {r["name"]: r for r in look["regions"]}
    assert {"top", "person"} <= set(found) and "shoes" not in found  # a head-and-shoulders portrait
    for region in look["regions"]:
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and 0 < region["score"] <= 1
        assert len(region["results"]) == 5 and region["scope"] == {}  # the shop has no such labels
    top = found["top"]["box"]
    assert top[1] > height * 0.3  # the top starts below the face
    assert ids(look["results"]) == ids(whole["results"])  # the whole photo's results are kept
    assert "regions" in look["timings_ms"]
    one = client.post("/search", json={"image_base64": base64.b64encode(portrait).decode(), "k": 5,
                                       "region": "top"}).json()
    assert [r["name"] for r in one["regions"]] == ["top"] and ids(one["results"]) == ids(found["top"]["results"])


def test_regions_compose_with_filters_and_colour(client, portrait):
    look = search(client, portrait, k=4, region="top", filters=json.dumps({"kind": ["shirt"]}))
    assert {hit["metadata"]["kind"] for hit in look["results"]} == {"shirt"}
    plain = search(client, portrait, k=4, region="top")
    coloured = search(client, portrait, k=4, region="top", color_weight=1.0)
    assert [h["score"] for h in coloured["results"]] != [h["score"] for h in plain["results"]]


def test_a_photo_without_a_person_searches_as_before(client):
    photo = jpeg_bytes(garment_image((30, 50, 200), "dress", seed=5))
    whole = search(client, photo, k=6)
    auto = search(client, photo, k=6, region="auto")
    assert auto["regions"] == [] and auto["results"] == whole["results"]
    r = client.post("/search", files={"file": ("q.jpg", photo, "image/jpeg")}, data={"region": "top"})
    assert r.status_code == 422 and "no person found" in r.json()["detail"]


def test_a_region_the_photo_does_not_show_is_a_clear_422(client, portrait):
    r = client.post("/search", files={"file": ("q.jpg", portrait, "image/jpeg")}, data={"region": "shoes"})
    assert r.status_code == 422 and "shows no shoes region" in r.json()["detail"]
    r = client.post("/search", json={"item_id": "red-shirt-0", "region": "auto"})
    assert r.status_code == 422 and "region applies to a query image" in r.json()["detail"]


@pytest.mark.parametrize("mode", ["1x1", "L", "CMYK", "RGBA", "P", "panorama"])
def test_odd_images_get_an_answer(client, portrait, mode):
    image = Image.open(io.BytesIO(portrait))
    if mode == "1x1":
        image = image.resize((1, 1))
    elif mode == "panorama":
        image = image.resize((20_000, 60))
    else:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG" if mode in ("RGBA", "P", "1x1", "panorama") else "JPEG")
    answer = search(client, buf.getvalue(), k=3, region="auto")
    assert len(answer["results"]) == 3
    if mode in ("L", "CMYK", "RGBA", "P"):  # the same person in any colour mode
        assert {"top", "person"} <= {r["name"] for r in answer["regions"]}
    else:
        assert answer["regions"] == []


def test_the_cli_searches_per_region_and_draws_the_look(collection_copy, portrait, tmp_path):
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(portrait)
    grid = tmp_path / "look.png"
    done = subprocess.run([sys.executable, "-m", "vestis", "search", "--collection", str(collection_copy), str(photo),
                           "--region", "auto", "-k", "3", "--json", "--grid", str(grid)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "INFO" not in done.stderr  # the native runtime's log lines do not reach the user
    out = json.loads(done.stdout)
    assert {"top", "person"} <= {r["name"] for r in out["regions"]}
    assert all(len(r["results"]) == 3 for r in out["regions"]) and len(out["results"]) == 3
    with Image.open(grid) as sheet:  # the photo, then a row per region: its cut-out and 3 results
        assert sheet.height > 2 * 160 * len(out["regions"]) / 2 and sheet.width >= 4 * 160


def test_photos_of_people_are_indexed_by_one_region(portrait, tmp_path):
    folder = tmp_path / "lookbook"
    folder.mkdir()
    (folder / "hopper.jpg").write_bytes(portrait)
    (folder / "dress.jpg").write_bytes(jpeg_bytes(garment_image((30, 50, 200), "dress", seed=5)))
    collection = tmp_path / "lookbook-top"

    def vestis(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vestis", *args], capture_output=True, text=True, timeout=300)

    done = vestis("index", str(folder), "--collection", str(collection), "--crop", "top", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["added"] == 2 and report["indexed_whole"] == 1  # the dress photo shows no person
    info = json.loads(vestis("info", "--collection", str(collection), "--json").stdout)
    assert info["crop"].startswith("top mediapipe-")
    # the stored vector is the top region's: the portrait's own top region finds it, the whole photo less so
    top = json.loads(vestis("search", "--collection", str(collection), str(folder / "hopper.jpg"), "--region", "top",
                            "-k", "1", "--json").stdout)["results"][0]
    whole = json.loads(vestis("search", "--collection", str(collection), str(folder / "hopper.jpg"), "-k", "1",
                              "--json").stdout)["results"][0]
    assert top["id"] == whole["id"] == "hopper" and top["score"] > 0.99 > whole["score"]
    refused = vestis("index", str(folder), "--collection", str(collection), "--crop", "person")
    assert refused.returncode == 2 and "holds photos cut to 'top" in refused.stderr
    again = vestis("index", str(folder), "--collection", str(collection), "--json")  # the recorded crop is kept
    assert again.returncode == 0 and json.loads(again.stdout)["unchanged"] == 2


def test_missing_pose_models_are_the_servers_fault_not_the_requests(client, portrait, monkeypatch):
    from vestis.encoders.regions import RegionModelsMissingError

    engine = client.app.state.service.engine

    def missing(*args, **kwargs):
        raise RegionModelsMissingError("the pose models are not installed: run `make install`")

    monkeypatch.setattr(engine, "_regions", None)
    monkeypatch.setattr("vestis.search.engine.get_region_finder", missing)
    r = client.post("/search", files={"file": ("q.jpg", portrait, "image/jpeg")}, data={"region": "auto"})
    assert r.status_code == 503 and "make install" in r.json()["detail"]
    assert client.post("/search", files={"file": ("q.jpg", portrait, "image/jpeg")}).status_code == 200

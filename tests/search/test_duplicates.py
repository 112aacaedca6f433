"""Near-duplicates: altered copies (mirrored, cropped) are grouped with their originals; different
garments are not; bad thresholds are clear errors. How well copies are found on real catalogue
photos is measured by benchmarks/duplicates.py."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from PIL import Image, ImageOps

from tests.conftest import garment_image, jpeg_bytes
from vestis.errors import VestisError
from vestis.search.duplicates import find_duplicates
from vestis.store.factory import open_collection

pytestmark = pytest.mark.slow

GARMENTS = {"red-shirt": ((200, 30, 30), "shirt"), "blue-dress": ((30, 50, 200), "dress"),
            "green-trousers": ((30, 160, 60), "trousers"), "black-shirt": ((25, 25, 25), "shirt")}


def vestis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vestis", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shop")
    for name, (rgb, shape) in GARMENTS.items():
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(garment_image(rgb, shape, size=(240, 320), seed=1)))
    original = Image.open(io.BytesIO((folder / "red-shirt.jpg").read_bytes())).convert("RGB")
    (folder / "red-shirt-mirrored.jpg").write_bytes(jpeg_bytes(ImageOps.mirror(original)))
    blue = Image.open(io.BytesIO((folder / "blue-dress.jpg").read_bytes())).convert("RGB")
    (folder / "blue-dress-crop.jpg").write_bytes(jpeg_bytes(blue.crop((12, 16, 228, 304))))
    path = tmp_path_factory.mktemp("collections") / "shop"
    done = vestis("index", str(folder), "--collection", str(path))
    assert done.returncode == 0, done.stderr
    return path


def test_altered_copies_are_grouped_with_their_originals(collection):
    with open_collection(collection) as coll:
        report = find_duplicates(coll)
        looser = find_duplicates(coll, 0.85)
    group_of = {i: set(g.ids) for g in report.groups for i in g.ids}
    assert "red-shirt-mirrored" in group_of["red-shirt"] and "blue-dress-crop" in group_of["blue-dress"]
    assert group_of["red-shirt"] != group_of["blue-dress"]
    assert "green-trousers" not in group_of and "black-shirt" not in group_of  # other garments stand alone
    assert all(s >= report.threshold for _a, _b, s in report.pairs_found)
    # the colour keeps a shirt of the same cut in another colour apart, even at a looser threshold
    # (their deep vectors alone are 0.87 alike)
    assert "black-shirt" not in {i for g in looser.groups if "red-shirt" in g.ids for i in g.ids}
    assert "red-shirt-mirrored" in {i for g in looser.groups if "red-shirt" in g.ids for i in g.ids}
    assert report.items == 6
    with open_collection(collection) as coll:  # a threshold of 1 leaves only identical vectors
        assert find_duplicates(coll, 1.0).groups == []


def test_the_cli_lists_groups_as_json_csv_and_pictures(collection, tmp_path):
    done = vestis("duplicates", "--collection", str(collection), "--json", "--csv", str(tmp_path / "pairs.csv"),
                  "--grid", str(tmp_path / "sheets"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["groups"] >= 2 and report["pairs"] >= 2
    rows = list(csv.DictReader(open(tmp_path / "pairs.csv")))
    assert len(rows) == report["pairs"] == len(report["all_pairs"])
    assert {r["group"] for r in rows} - {""} == {str(n) for n in range(1, report["groups"] + 1)}
    sheets = sorted((tmp_path / "sheets").glob("group-*.png"))
    assert len(sheets) == report["groups"] and Image.open(sheets[0]).width >= 2 * 160


def test_look_alikes_do_not_chain_into_one_group():
    from vestis.search.duplicates import _groups

    chain = {(1, 2): 0.99, (2, 3): 0.98, (3, 4): 0.97, (4, 5): 0.96}  # each only like its neighbour
    assert sorted(map(sorted, _groups(chain))) == [[1, 2], [3, 4]]
    star = {(1, 2): 0.99, (1, 3): 0.98, (2, 3): 0.97}
    assert _groups(star) == [{1, 2, 3}]


@pytest.mark.parametrize("threshold", ["0.2", "1.5", "nan"])
def test_a_threshold_outside_its_range_is_a_clear_error(collection, threshold):
    done = vestis("duplicates", "--collection", str(collection), "--threshold", threshold)
    assert done.returncode == 2 and "threshold is a cosine similarity between 0.5 and 1" in done.stderr
    with open_collection(collection) as coll, pytest.raises(VestisError, match="between 0.5 and 1"):
        find_duplicates(coll, float(threshold))


def test_the_api_lists_groups_and_scans_again_after_a_write(collection, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from vestis.api.app import create_app

    copy = tmp_path / "shop"
    shutil.copytree(collection, copy)
    with TestClient(create_app(copy, workers=1)) as client:
        first = client.get("/duplicates")
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["groups"] >= 2 and body["items"] == 6
        assert any({"red-shirt", "red-shirt-mirrored"} <= set(g["ids"]) for g in body["duplicates"])
        assert client.get("/duplicates").json()["seconds"] == body["seconds"]  # the same scan, kept
        page = client.get("/duplicates", params={"limit": 1, "offset": 1}).json()
        assert page["duplicates"] == body["duplicates"][1:2]
        for bad in ({"threshold": 0.2}, {"threshold": "nan"}, {"limit": 0}):
            assert client.get("/duplicates", params=bad).status_code == 422
        assert client.delete("/items/red-shirt-mirrored").status_code == 200
        after = client.get("/duplicates").json()  # a write: scanned again
        assert not any("red-shirt-mirrored" in g["ids"] for g in after["duplicates"])


def test_index_can_leave_out_new_duplicates(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    for name, (rgb, shape) in list(GARMENTS.items())[:2]:
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(garment_image(rgb, shape, size=(240, 320), seed=1)))
    collection = tmp_path / "collection"
    assert vestis("index", str(folder), "--collection", str(collection)).returncode == 0
    original = Image.open(folder / "red-shirt.jpg").convert("RGB")
    (folder / "red-shirt-again.jpg").write_bytes(jpeg_bytes(ImageOps.mirror(original)))  # re-uploaded, mirrored
    rgb, shape = GARMENTS["green-trousers"]
    (folder / "green-trousers.jpg").write_bytes(jpeg_bytes(garment_image(rgb, shape, size=(240, 320), seed=1)))
    done = vestis("index", str(folder), "--collection", str(collection), "--skip-duplicates", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["added"] == 1  # the new garment
    assert [(d["id"], d["duplicate_of"]) for d in report["skipped_duplicates"]] == [("red-shirt-again", "red-shirt")]
    with open_collection(collection) as coll:
        assert "red-shirt-again" not in coll and "green-trousers" in coll
    text = vestis("index", str(folder), "--collection", str(collection), "--skip-duplicates")
    assert "duplicate red-shirt-again" in " ".join(text.stderr.split()) and "of red-shirt" in text.stderr

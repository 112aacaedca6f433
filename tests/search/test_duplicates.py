"""Near-duplicates: altered copies (mirrored, cropped, half-size) are grouped with their originals;
different garments, and different products of the same pose, are not; bad thresholds are clear
errors. How well copies are found on real catalogue photos is measured by benchmarks/duplicates.py."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile

import pytest
from PIL import Image, ImageOps

from tests.conftest import garment_image, jpeg_bytes
from vestis.errors import VestisError
from vestis.search.duplicates import CONFIRM_FROM, CONFIRM_NCC, Thumbnails, find_duplicates
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
    assert all(s >= report.threshold or s >= CONFIRM_FROM for _a, _b, s in report.pairs_found)
    # the colour keeps a shirt of the same cut in another colour apart, even at a looser threshold
    # (their deep vectors alone are 0.87 alike)
    assert "black-shirt" not in {i for g in looser.groups if "red-shirt" in g.ids for i in g.ids}
    assert "red-shirt-mirrored" in {i for g in looser.groups if "red-shirt" in g.ids for i in g.ids}
    assert report.items == 6
    with open_collection(collection) as coll:  # a threshold of 1, unconfirmed, leaves only identical vectors
        assert find_duplicates(coll, 1.0, confirm_from=None).groups == []


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


def test_a_half_size_copy_is_confirmed_by_its_thumbnail_and_a_look_alike_is_not(shared_datasets, tmp_path):
    """Real catalogue photos: a half-size copy is found though its deep similarity is under the
    threshold (its thumbnail is the original's); two different products whose similarity is as
    close are not (their thumbnails differ). Both are left out by ``vestis index --skip-duplicates``."""
    folder, copies = tmp_path / "shop", tmp_path / "copies"
    folder.mkdir()
    copies.mkdir()
    with zipfile.ZipFile(shared_datasets / "fashion-product-images-300.zip") as z:
        for name in ("52210", "13656", "36325", "36324"):
            (folder / f"{name}.jpg").write_bytes(z.read(f"images/{name}.jpg"))
    for name in ("52210", "13656"):  # re-uploaded at half size
        photo = Image.open(folder / f"{name}.jpg").convert("RGB")
        photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.BILINEAR).save(copies / f"{name}-half.jpg",
                                                                                           quality=90)
    thumbnails = Thumbnails()
    assert thumbnails.correlation(str(folder / "52210.jpg"), str(copies / "52210-half.jpg")) >= CONFIRM_NCC
    assert thumbnails.correlation(str(folder / "36325.jpg"), str(folder / "36324.jpg")) < CONFIRM_NCC
    collection = tmp_path / "collection"
    assert vestis("index", str(folder), "--collection", str(collection)).returncode == 0
    done = vestis("index", str(copies), "--collection", str(collection), "--skip-duplicates", "--json")
    assert done.returncode == 0, done.stderr
    assert sorted((d["id"], d["duplicate_of"]) for d in json.loads(done.stdout)["skipped_duplicates"]) == [
        ("13656-half", "13656"), ("52210-half", "52210")]
    assert vestis("index", str(copies), "--collection", str(collection)).returncode == 0
    with open_collection(collection) as coll:
        report = find_duplicates(coll)
        unconfirmed = find_duplicates(coll, CONFIRM_FROM, confirm_from=None)
    pairs = {frozenset((a, b)): s for a, b, s in report.pairs_found}
    assert set(pairs) == {frozenset(("52210", "52210-half")), frozenset(("13656", "13656-half"))}
    assert all(CONFIRM_FROM <= s < report.threshold for s in pairs.values()) and report.confirmed == 2
    # on the similarity alone the two different products would pair
    assert frozenset(("36325", "36324")) in {frozenset((a, b)) for a, b, _s in unconfirmed.pairs_found}

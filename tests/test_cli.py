"""The `vestis` command on a small real collection: index, search (--json, --grid, filters,
paging), info, remove, and bad arguments with their messages and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import write_catalogue
from vestis.cli import app

pytestmark = pytest.mark.slow

COLOURS = {"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60)}
SHAPES = ("shirt", "trousers")


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """12 garment photos with colour and kind labels in metadata.csv."""
    folder = tmp_path_factory.mktemp("shop")
    write_catalogue(folder, COLOURS, SHAPES)
    return folder


@pytest.fixture(scope="module")
def collection(shop, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("coll") / "shop"
    result = CliRunner().invoke(app, ["index", str(shop), "--collection", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["added"] == 12 and report["failed"] == []
    return path


def vestis(*args: str) -> subprocess.CompletedProcess:
    """The installed entry point in a fresh process (errors go through `main`: message, exit 2)."""
    return subprocess.run([sys.executable, "-m", "vestis", *args], capture_output=True, text=True, timeout=300)


def search_json(*args: str) -> dict:
    result = CliRunner().invoke(app, ["search", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_index_again_embeds_nothing(shop, collection):
    result = CliRunner().invoke(app, ["index", str(shop), "--collection", str(collection), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert (report["added"], report["updated"], report["unchanged"], report["removed"]) == (0, 0, 12, 0)


def test_search_by_image_finds_it_first_with_timings(shop, collection):
    out = search_json("--collection", str(collection), str(shop / "blue-shirt-1.jpg"), "-k", "3")
    assert out["results"][0]["id"] == "blue-shirt-1" and out["results"][0]["score"] > 0.99
    assert len(out["results"]) == 3
    assert out["results"][0]["metadata"] == {"colour": "blue", "kind": "shirt"}
    assert list(out["timings_ms"]) == ["load_collection", "load_model", "decode", "embed", "search",
                                       "fetch_metadata", "total"]


def test_search_by_item_with_filters_and_paging(collection):
    out = search_json("--collection", str(collection), "--id", "red-shirt-0", "--filter", "kind=shirt", "-k", "5")
    ids = [r["id"] for r in out["results"]]
    assert "red-shirt-0" not in ids and len(ids) == 5
    assert all(r["metadata"]["kind"] == "shirt" for r in out["results"])
    assert ids[0] == "red-shirt-1"  # the same garment, another copy
    page2 = search_json("--collection", str(collection), "--id", "red-shirt-0", "--filter", "kind=shirt",
                        "-k", "2", "--offset", "2")
    assert [r["id"] for r in page2["results"]] == ids[2:4]


def test_search_grid_writes_a_contact_sheet(shop, collection, tmp_path):
    grid = tmp_path / "grid.png"
    result = CliRunner().invoke(app, ["search", "--collection", str(collection), str(shop / "green-trousers-0.jpg"),
                                      "-k", "4", "--grid", str(grid)])
    assert result.exit_code == 0, result.output
    with Image.open(grid) as sheet:
        assert sheet.width > 4 * 160 and sheet.height >= 200  # the query and 4 results in one row


def test_search_grid_of_a_word_query(collection, tmp_path):
    """A word query has no query image: its sheet opens with the words, then the results."""
    grid = tmp_path / "words.png"
    result = CliRunner().invoke(app, ["search", "--collection", str(collection), "--text", "green trousers",
                                      "--mode", "keyword", "-k", "3", "--grid", str(grid)])
    assert result.exit_code == 0, result.output
    with Image.open(grid) as sheet:
        assert sheet.width >= 4 * 160  # the words' cell and 3 results


def test_info_and_remove(collection, tmp_path):
    info = json.loads(CliRunner().invoke(app, ["info", "--collection", str(collection), "--json"]).stdout)
    assert info["items"] == 12 and info["metadata_columns"] == ["colour", "kind"]
    result = vestis("remove", "green-shirt-0", "nope", "--collection", str(collection))
    assert result.returncode == 0, result.stderr
    assert "not in collection: nope" in result.stderr and "removed 1 item(s)" in result.stderr
    out = search_json("--collection", str(collection), "--id", "green-shirt-1", "-k", "20")
    assert "green-shirt-0" not in [r["id"] for r in out["results"]] and len(out["results"]) == 10


@pytest.mark.parametrize(("args", "message"), [
    (["--id", "red-shirt-0", "--filter", "nope=x"], "unknown filter column(s) 'nope'; valid columns"),
    (["--id", "red-shirt-0", "--filter", "kind"], "--filter takes key=value"),
    (["--id", "no-such-item"], "no item 'no-such-item'"),
    ([], "give an image, an item id, a text or positive examples"),
    (["/no/such/photo.jpg"], "no such image file"),
    (["--id", "red-shirt-0", "-k", "0"], "k must be a whole number between 1 and 1000"),
    (["--id", "red-shirt-0", "--offset", "20000"], "offset must be a whole number between 0 and 10000"),
    (["--id", "red-shirt-0", "--attrs", "sleeve"], "unknown attribute(s) 'sleeve'; valid attributes: none (build an "
                                                   "attribute index"),
    (["--id", "1" + "0" * 400 + ":red-shirt-0", "--not", "red-shirt-1"], "its weight must be a number above 0"),
    (["--id", "red-shirt-0", "--text", "red", "--text-weight", "nan"], "text_weight must be a finite number"),
    (["--id", "red-shirt-0", "--region", "top"], "region applies to a query image"),
    # no joint model: words with an item are refused for that reason, not as a keyword query
    (["--id", "red-shirt-0", "--text", "red"], "combining words with images or items needs a joint text-image model"),
    (["--id", "red-shirt-0", "--region", "sleeves"], "region must be one of auto, none, top"),
])
def test_bad_search_arguments_give_a_clear_error(collection, args, message):
    result = vestis("search", "--collection", str(collection), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr


def test_a_missing_collection_is_named(tmp_path):
    result = vestis("info", "--collection", str(tmp_path / "none"))
    assert result.returncode == 2 and "no collection at" in result.stderr

"""`vestis search` and `vestis info` refuse what the API refuses, with the same messages: unknown
filter columns, non-finite colour weights, a damaged collection; and print valid JSON otherwise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.conftest import garment_image, jpeg_bytes
from vestis.cli import app
from vestis.data import open_catalogue
from vestis.encoders import get_encoder
from vestis.errors import CollectionDamagedError
from vestis.search.filters import FilterError, check_filters
from vestis.store.collection import DB_NAME, Collection
from vestis.store.ingest import index_catalogue, open_or_create

pytestmark = pytest.mark.slow  # builds a small collection with the real encoder


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    shop = tmp_path_factory.mktemp("shop")
    rows = ["id,path,colour"]
    for n, (name, rgb) in enumerate({"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60)}.items()):
        for shape in ("shirt", "dress"):
            (shop / f"{name}-{shape}.jpg").write_bytes(jpeg_bytes(garment_image(rgb, shape, seed=n)))
            rows.append(f"{name}-{shape},{name}-{shape}.jpg,{name}")
    (shop / "metadata.csv").write_text("\n".join(rows) + "\n")
    path = tmp_path_factory.mktemp("coll") / "c"
    encoder = get_encoder()
    with open_or_create(path, encoder, None) as coll:
        index_catalogue(coll, open_catalogue(shop), encoder, progress=False)
    return path


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_unknown_filter_column_is_refused_with_the_valid_ones(collection):
    result = run("search", "-c", str(collection), "--id", "red-shirt", "--filter", "nope=x", "--json")
    assert isinstance(result.exception, FilterError)
    assert str(result.exception) == "unknown filter column(s) 'nope'; valid columns: ['colour']"
    ok = run("search", "-c", str(collection), "--id", "red-shirt", "--filter", "colour=red", "--json")
    assert ok.exit_code == 0, ok.output
    assert [h["id"] for h in json.loads(ok.stdout)["results"]] == ["red-dress"]


def test_the_api_and_the_cli_share_the_filter_check():
    assert check_filters({"colour": "red", "kind": ["a", "b"]}, ["colour", "kind"]) == {"colour": ["red"],
                                                                                      "kind": ["a", "b"]}
    with pytest.raises(FilterError, match=r"unknown filter column\(s\) 'fabric', 'x'; valid columns: \['colour'\]"):
        check_filters({"fabric": "silk", "x": [], "colour": "red"}, ["colour"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_colour_weights_are_refused(collection, value):
    result = run("search", "-c", str(collection), "--id", "red-shirt", "--color-weight", value, "--json")
    assert result.exit_code == 2 and "must be a finite number" in result.output
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout
    result = run("eval", "-c", str(collection), "--group", "colour", "--color-weight", value)
    assert result.exit_code == 2 and "must be a finite number" in result.output


def test_a_truncated_database_is_reported_as_damaged(collection, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(collection, copy)
    db = copy / DB_NAME
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)
    for args in (["info", "-c", str(copy)], ["search", "-c", str(copy), "--id", "red-shirt"]):
        result = run(*args)
        assert isinstance(result.exception, CollectionDamagedError), result.output
        assert str(result.exception).startswith(f"the collection at {copy} is damaged: {DB_NAME} cannot be read")
    with pytest.raises(CollectionDamagedError):
        Collection.exists(copy)
    assert not Collection.exists(tmp_path / "nothing-here")


# what an image query in a fresh process must not import: each of these made the cold start slower
# (pydantic through typer 0.29's parameter validators; the rest are only needed by other commands)
NOT_FOR_AN_IMAGE_QUERY = ("pydantic", "torch", "sklearn", "scipy", "faiss", "bm25s", "tokenizers", "Stemmer",
                          "tqdm", "numpy.ma", "yaml")


def test_an_image_query_in_a_fresh_process_imports_only_what_it_needs(collection, tmp_path):
    photo = tmp_path / "query.jpg"
    photo.write_bytes(jpeg_bytes(garment_image((200, 30, 30), "shirt", seed=7)))
    loaded = tmp_path / "modules.txt"
    script = ("import atexit, runpy, sys\n"
              # modules made by vestis.lazy and never touched are not loaded: left out
              f"atexit.register(lambda: open({str(loaded)!r}, 'w').write('\\n'.join(sorted(\n"
              "    name for name, m in sys.modules.items() if type(m).__name__ != '_LazyModule'))))\n"
              f"sys.argv = ['vestis', 'search', '-c', {str(collection)!r}, {str(photo)!r}, '--json']\n"
              "runpy.run_module('vestis', run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"][0]["id"] == "red-shirt"
    modules = set(loaded.read_text().split())
    assert "onnxruntime" in modules and "vestis.search.engine" in modules
    assert sorted(m for m in modules if m.split(".")[0] in NOT_FOR_AN_IMAGE_QUERY or m == "numpy.ma"
                  or m.startswith("numpy.ma.")) == []

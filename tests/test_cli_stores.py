"""Every `vestis` command a catalogue's owner runs, on the local store and on Milvus Lite: the
same answers whichever store holds the collection (the store contract, seen from the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.cbook
import pytest

from tests.conftest import write_catalogue
from vestis.encoders import regions

pytestmark = pytest.mark.slow

COLOURS = {"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60)}
SHAPES = ("shirt", "dress")


def vestis(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vestis", *args], capture_output=True, text=True, timeout=600)
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("catalogue")
    write_catalogue(folder, COLOURS, SHAPES, labels=lambda colour, shape, n: {
        "title": f"{colour.title()} {shape} number {n}"})
    return folder


@pytest.fixture(scope="module", params=["local", "milvus-lite"])
def collection(request, catalogue, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "local":
        location = str(root / "shop")
    else:
        pytest.importorskip("milvus_lite")
        location = f"milvus-lite:{root / 'shop.db'}"
    report = json.loads(vestis("index", str(catalogue), "--collection", location, "--json").stdout)
    assert report["added"] == 12
    return location


def search(*args: str) -> dict:
    return json.loads(vestis("search", *args, "--json").stdout)


def test_info_search_and_filters(collection, catalogue):
    info = json.loads(vestis("info", "--collection", collection, "--json").stdout)
    assert info["items"] == 12 and set(info["metadata_columns"]) >= {"colour", "kind", "title"}
    by_photo = search("--collection", collection, str(catalogue / "blue-dress-1.jpg"), "-k", "3")
    assert by_photo["results"][0]["id"] == "blue-dress-1" and by_photo["results"][0]["score"] > 0.99
    by_item = search("--collection", collection, "--id", "red-shirt-0", "-k", "11")
    assert by_item["results"][0]["id"] == "red-shirt-1" and "red-shirt-0" not in [h["id"] for h in by_item["results"]]
    filtered = search("--collection", collection, "--id", "red-shirt-0", "--filter", "kind=dress", "-k", "20")
    assert {h["metadata"]["kind"] for h in filtered["results"]} == {"dress"} and len(filtered["results"]) == 6
    coloured = search("--collection", collection, "--id", "red-shirt-0", "--color-weight", "1", "-k", "3")
    assert coloured["results"][0]["metadata"]["colour"] == "red"


def test_words_in_keyword_mode(collection):
    words = search("--collection", collection, "--text", "green dress", "--mode", "keyword", "-k", "12")
    ids = [h["id"] for h in words["results"]]
    assert set(ids[:2]) == {"green-dress-0", "green-dress-1"}
    refused = vestis("search", "--collection", collection, "--text", "green", "--mode", "vector", ok=False)
    assert refused.returncode == 2 and "needs a joint text-image model" in refused.stderr


@pytest.mark.skipif(not regions.models_installed(), reason="pose models not installed (make install)")
def test_shop_the_look(collection, tmp_path):
    photo = tmp_path / "portrait.jpg"
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo.write_bytes(f.read())
    look = search("--collection", collection, str(photo), "--region", "auto", "-k", "2")
    assert {"top", "person"} <= {r["name"] for r in look["regions"]}
    assert all(len(r["results"]) == 2 for r in look["regions"])


def test_eval_export_and_remove(collection, tmp_path):
    metrics = json.loads(vestis("eval", "--collection", collection, "--group", "colour,kind", "--k", "1",
                                "--json").stdout)
    assert metrics["n_queries_total"] == 12 and metrics["R@1"] == 1.0  # each garment's twin is nearest
    out = tmp_path / "items.parquet"
    vestis("export", "--collection", collection, "--out", str(out))
    vestis("import", str(out), "--collection", str(tmp_path / "copy"))
    copy = search("--collection", str(tmp_path / "copy"), "--id", "green-shirt-1", "-k", "4")
    here = search("--collection", collection, "--id", "green-shirt-1", "-k", "4")
    assert [h["id"] for h in copy["results"]] == [h["id"] for h in here["results"]]
    vestis("remove", "green-shirt-0", "--collection", collection)
    assert json.loads(vestis("info", "--collection", collection, "--json").stdout)["items"] == 11
    assert "green-shirt-0" not in [h["id"] for h in search("--collection", collection, "--id", "green-shirt-1",
                                                           "-k", "10")["results"]]
    vestis("index", str(tmp_path.parent), "--collection", collection, "--json", ok=False)  # no catalogue: clear


def test_text_build_on_each_store(collection, tmp_path):
    """The local store keeps joint text-image vectors; Milvus says plainly that it keeps none."""
    import torch

    from vestis.encoders.text import text_encoder_version
    from vestis.train.joint import Projection, write_joint_model

    info = json.loads(vestis("info", "--collection", collection, "--json").stdout)
    torch.manual_seed(0)
    model = write_joint_model(Projection(1280, 16), Projection(384, 16), tmp_path / "joint", name="untrained",
                              version="1", image_encoder=info["encoder"],
                              image_encoder_version=info["encoder_version"], text_encoder="all-minilm-l6-v2",
                              text_encoder_version=text_encoder_version("all-minilm-l6-v2"), logit_scale=10.0)
    done = vestis("text", "build", "--collection", collection, "--model", str(model), ok=False)
    if collection.startswith("milvus"):
        assert done.returncode == 2 and "keeps no joint text-image vectors" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        words = search("--collection", collection, "--text", "blue dress", "--mode", "vector", "-k", "3")
        assert len(words["results"]) == 3

"""End-to-end query timing (``vestis bench query``) on a small collection embedded with the default encoder."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from tests.conftest import garment_image, jpeg_bytes
from vestis.data import open_catalogue
from vestis.encoders import get_encoder
from vestis.bench.query import STAGES, load_query_images, markdown, run_query_bench, time_queries
from vestis.search.engine import Engine
from vestis.store.ingest import index_catalogue, open_or_create

COLOURS = [(200, 30, 30), (30, 160, 40), (30, 60, 200), (230, 200, 40), (40, 40, 40), (240, 240, 240)]


@pytest.fixture(scope="module")
def garments(tmp_path_factory):
    """Six garment JPEGs in a folder, a zip of the same, and a collection of them (auto index)."""
    root = tmp_path_factory.mktemp("bench-query")
    folder = root / "shop"
    folder.mkdir()
    for i, colour in enumerate(COLOURS):
        (folder / f"g{i}.jpg").write_bytes(jpeg_bytes(garment_image(colour, ("shirt", "dress")[i % 2], seed=i)))
    with zipfile.ZipFile(root / "queries.zip", "w") as archive:
        for path in sorted(folder.glob("*.jpg")):
            archive.write(path, f"imgs/{path.name}")
    encoder = get_encoder()
    collection = open_or_create(root / "collection", encoder, None)
    index_catalogue(collection, open_catalogue(folder), encoder, progress=False)
    collection.close()
    return root


def test_query_images_come_from_files_folders_and_zips(garments):
    images = load_query_images([garments / "queries.zip", garments / "shop" / "g0.jpg"], limit=7)
    assert [name for name, _ in images][-2:] == ["queries.zip:imgs/g5.jpg", str(garments / "shop" / "g0.jpg")]
    assert all(data[:2] == b"\xff\xd8" for _, data in images)  # JPEG bytes
    assert len(load_query_images([garments / "queries.zip"], limit=3)) == 3
    assert [name for name, _ in load_query_images([garments / "shop"])] == [
        str(garments / "shop" / f"g{i}.jpg") for i in range(6)]


@pytest.mark.slow
def test_steps_add_up_and_the_query_finds_itself(garments):
    from vestis.store.collection import Collection

    with Collection.open(garments / "collection") as collection:
        assert collection.info()["index_choice"].startswith("auto: exact up to")  # new collections default to auto
        engine = Engine(collection)
        images = load_query_images([garments / "shop"])
        samples = time_queries(engine, images, runs=12)
        assert set(samples) == set(STAGES) and all(len(v) == 12 for v in samples.values())
        parts = sum(np.array(samples[s]) for s in STAGES[:-1])
        assert np.all(parts <= np.array(samples["total"]) + 0.5)
        assert np.median(samples["embed"]) > np.median(samples["fetch_metadata"])
        same = engine.search(engine.query(image=images[2][1]), k=1).hits[0]
        assert same.id.endswith("g2")  # the timed path embeds like query_from_image


@pytest.mark.slow
def test_run_query_bench_reports_warm_and_cold_latency(garments):
    result = run_query_bench(garments / "collection", [garments / "queries.zip"], runs=6, cold_runs=1, command="t")
    assert result["collection"]["items"] == 6 and result["collection"]["index"] == "exact"
    warm = result["warm_ms"]
    assert set(warm) == set(STAGES) and all(0 < v["p50"] <= v["p99"] for v in warm.values())
    cold = result["cold_start"]
    assert cold["runs"] == 1 and cold["wall_ms_median"] > warm["total"]["p50"]
    assert {"load_collection", "load_model", "embed", "search", "total"} <= set(cold["reported_ms_median"])
    text = markdown(result)
    assert "| embed |" in text and "Cold start" in text

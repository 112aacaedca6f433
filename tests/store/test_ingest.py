"""Incremental indexing of real (generated) JPEGs with the default encoder, and search over them."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import garment_image, jpeg_bytes, write_catalogue
from vestis.data import open_catalogue
from vestis.encoders import get_encoder
from vestis.search.searcher import Searcher
from vestis.store.collection import Collection
from vestis.store.ingest import index_catalogue, open_or_create

COLOURS = {"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60)}
SHAPES = ["shirt", "trousers"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder():
    return get_encoder()


def build(folder: Path, coll_dir: Path, encoder):
    coll = open_or_create(coll_dir, encoder, None)
    report = index_catalogue(coll, open_catalogue(folder), encoder, batch_size=4, progress=False)
    return coll, report


def test_index_reports_corrupt_files_and_is_incremental(tmp_path, encoder):
    folder = tmp_path / "shop"
    ids = [row["id"] for row in write_catalogue(folder, COLOURS, SHAPES)]
    (folder / "broken.jpg").write_bytes(jpeg_bytes(garment_image((1, 2, 3)))[:300])  # truncated
    (folder / "notes.png").write_bytes(b"this is not an image")
    coll, report = build(folder, tmp_path / "c", encoder)
    assert report.added == len(ids) and len(coll) == len(ids)
    reasons = {fid: reason for fid, _src, reason in report.failures}
    assert set(reasons) == {"broken", "notes"}
    assert all(reason for reason in reasons.values())

    # Second run: nothing to embed.
    coll, report = build(folder, tmp_path / "c", encoder)
    assert (report.added, report.updated, report.embedded) == (0, 0, 0)
    assert report.unchanged == len(ids)

    # Touch one file (same bytes, new mtime): not re-embedded, vid kept.
    target = folder / "red-shirt-0.jpg"
    vid_before = coll.get("red-shirt-0").vid
    os.utime(target, (time.time() + 5, time.time() + 5))
    # Change another image's content: re-embedded under a new vid.
    (folder / "blue-shirt-1.jpg").write_bytes(jpeg_bytes(garment_image((250, 250, 0), "shirt", seed=9)))
    # Delete one image and relabel another in the CSV.
    (folder / "green-trousers-1.jpg").unlink()
    text = (folder / "metadata.csv").read_text().replace("green-trousers-0.jpg,green", "green-trousers-0.jpg,olive")
    (folder / "metadata.csv").write_text(text)
    coll, report = build(folder, tmp_path / "c", encoder)
    assert report.updated == 1 and report.removed == 1 and report.added == 0
    assert report.embedded == 1 and report.reused == 1  # the touched file is read and hashed, its vector kept
    assert coll.get("red-shirt-0").vid == vid_before
    assert "green-trousers-1" not in coll
    assert coll.get("green-trousers-0").metadata["colour"] == "olive"


def test_search_finds_same_colour_and_shape(tmp_path, encoder):
    folder = tmp_path / "shop"
    write_catalogue(folder, COLOURS, SHAPES, copies=3)
    coll, _ = build(folder, tmp_path / "c", encoder)
    searcher = Searcher(coll, encoder)
    query = searcher.query_from_image(garment_image(COLOURS["red"], "shirt", seed=42))
    top = searcher.search(query, k=3).hits
    assert [h.metadata["kind"] for h in top] == ["shirt"] * 3
    fused = searcher.search(query, k=3, colour_weight=1.0).hits
    assert all(h.id.startswith("red-shirt") for h in fused)
    # More like this never returns the item itself, and filters restrict the candidates.
    similar = searcher.search(searcher.query_from_item("blue-trousers-0"), k=5, filters={"colour": ["blue"]})
    assert "blue-trousers-0" not in [h.id for h in similar.hits]
    assert {h.metadata["colour"] for h in similar.hits} == {"blue"} and len(similar.hits) == 5


def test_kill_mid_index_loses_nothing(tmp_path):
    """SIGKILL `vestis index` after some batches; the collection opens, and a re-run completes."""
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(160):
        rgb = ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256)
        (folder / f"img{n:03d}.jpg").write_bytes(jpeg_bytes(garment_image(rgb, SHAPES[n % 2], seed=n)))
    coll_dir = tmp_path / "c"
    cmd = [sys.executable, "-m", "vestis", "index", str(folder), "--collection", str(coll_dir), "--batch-size", "4"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = coll_dir / "collection.sqlite"
    deadline = time.time() + 240
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                    committed = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            except sqlite3.Error:
                committed = 0
            if committed >= 20:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "indexing finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    coll = Collection.open(coll_dir)
    survived = len(coll)
    assert survived >= committed
    # Every committed item is whole: it has a vector in the table.
    assert coll.table().n_alive == survived
    coll.close()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    coll = Collection.open(coll_dir)
    assert len(coll) == 160 and coll.table().n_alive == 160


def test_renamed_ids_take_the_stored_vectors_without_the_encoder(tmp_path, encoder, monkeypatch):
    """Re-indexing a folder whose metadata gives every item a new id embeds nothing: each image's
    bytes (by hash) already have vectors in the collection, which the renamed items take."""
    folder = tmp_path / "shop"
    ids = [row["id"] for row in write_catalogue(folder, COLOURS, SHAPES)]
    coll, report = build(folder, tmp_path / "c", encoder)
    assert report.embedded == len(ids)
    before = {i: coll.vector_of(i) for i in ids}
    text = (folder / "metadata.csv").read_text()
    for item_id in ids:
        text = text.replace(f"{item_id},", f"sku-{item_id},", 1)
    (folder / "metadata.csv").write_text(text)
    batches = []
    real = encoder.embed_batch
    monkeypatch.setattr(encoder, "embed_batch", lambda tensors: batches.append(len(tensors)) or real(tensors))
    coll, report = build(folder, tmp_path / "c", encoder)
    assert batches == [] and report.embedded == 0
    assert (report.added, report.removed, report.reused) == (len(ids), len(ids), len(ids))
    assert sorted(it.id for it in coll.iter_items()) == sorted(f"sku-{i}" for i in ids)
    for item_id, (vector, colour) in before.items():
        new_vector, new_colour = coll.vector_of(f"sku-{item_id}")
        assert np.array_equal(new_vector, vector) and np.array_equal(new_colour, colour)
    # A changed image is still embedded, and search finds the renamed items.
    (folder / "red-shirt-0.jpg").write_bytes(jpeg_bytes(garment_image((250, 250, 0), "dress", seed=5)))
    coll, report = build(folder, tmp_path / "c", encoder)
    assert batches == [1] and report.updated == 1 and report.reused == 0
    searcher = Searcher(coll, encoder)
    hits = searcher.search(searcher.query_from_image(garment_image(COLOURS["blue"], "trousers", seed=0)), k=1).hits
    assert hits[0].id == "sku-blue-trousers-0"

"""Re-embedding a collection of real (generated) JPEGs with another encoder: the switch, what a
reader that stayed open sees, resuming, items that arrive meanwhile, rollback and bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import write_catalogue
from vestis.cli import app
from vestis.data import open_catalogue
from vestis.encoders import builtin_model_path
from vestis.search.engine import Engine
from vestis.store.collection import Collection
from vestis.store.guards import CollectionBusyError, DiskFullError, indexing_lock
from vestis.store.ingest import index_catalogue, open_or_create
from vestis.store.reindex import ReindexError, reindex, rollback
from vestis.store.reindex_stage import EncoderSettings, LocalStage

COLOURS = {"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60)}
SHAPES = ["shirt", "trousers"]

pytestmark = pytest.mark.slow


@pytest.fixture
def shop(tmp_path):
    write_catalogue(tmp_path / "shop", COLOURS, SHAPES)
    return tmp_path / "shop"


def build(shop, path, encoder, spec="faiss:HNSW32"):
    coll = open_or_create(path, encoder, spec)
    index_catalogue(coll, open_catalogue(shop), encoder, batch_size=4, progress=False)
    return coll


def vectors(coll):
    return {it.id: coll.vector_of(it.id)[0] for it in coll.iter_items()}


def test_reindex_switches_every_vector_and_a_reader_left_open_follows(shop, tmp_path, old_encoder, new_encoder):
    coll = build(shop, tmp_path / "c", old_encoder)
    coll.persist()
    before = vectors(coll)
    reader = Engine.open(tmp_path / "c")  # a server's engine, opened before the switch
    query = shop / "red-shirt-0.jpg"
    assert reader.encoder.version == old_encoder.version
    old_hits = reader.search(reader.query(image=query), k=3).hits

    report = reindex(coll, new_encoder, batch_size=4, progress=False)
    assert (report.items, report.embedded, report.resumed) == (12, 12, 0)
    assert coll.encoder_version == new_encoder.version
    fresh = build(shop, tmp_path / "fresh", new_encoder)  # the same catalogue indexed with the new encoder
    after, expected = vectors(coll), vectors(fresh)
    assert set(after) == set(before)
    for item_id in after:
        np.testing.assert_allclose(after[item_id], expected[item_id], atol=1e-5)
        assert not np.allclose(after[item_id], before[item_id], atol=1e-5)
    assert {it.vid for it in coll.iter_items()} == {it.vid for it in Collection.open(tmp_path / "c").iter_items()}

    # the reader embeds its queries with the new encoder and searches the new vectors and index
    assert reader.encoder.version == new_encoder.version
    hits = reader.search(reader.query(image=query), k=3).hits
    assert hits[0].id == old_hits[0].id == "red-shirt-0"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert reader.collection.index().spec.startswith("faiss:HNSW32")
    # the ANN index was saved for the switch: a new process loads it, with the new vectors
    pointer = json.loads((tmp_path / "c" / "index.json").read_text())
    assert pointer["vectors_since"] == int(Collection.open(tmp_path / "c").settings["vectors_since"])
    reader.close()


def test_a_killed_run_leaves_the_old_state_and_the_next_run_resumes(shop, tmp_path, old_encoder, new_encoder):
    coll = build(shop, tmp_path / "c", old_encoder, "exact")
    before = vectors(coll)
    # a run that staged half the items and was killed before switching
    stage = LocalStage(coll, EncoderSettings.of(new_encoder))
    half = stage.missing()[:6]
    stage.add(half, new_encoder.embed_images([open_image(shop, it.source) for it in half]))
    del stage
    with Collection.open(tmp_path / "c") as other:
        assert other.encoder_version == old_encoder.version and vectors(other).keys() == before.keys()
        for item_id, vector in vectors(other).items():
            np.testing.assert_array_equal(vector, before[item_id])
    # meanwhile one item is removed and one added (by the old encoder, as `vestis index` would)
    coll.remove(["green-trousers-1"])
    (shop / "green-trousers-1.jpg").rename(shop / "late.jpg")
    index_catalogue(coll, open_catalogue(shop), old_encoder, batch_size=4, progress=False)

    report = reindex(coll, new_encoder, batch_size=4, progress=False)
    assert (report.resumed, report.embedded, report.items) == (6, 6, 12)
    fresh = build(shop, tmp_path / "fresh", new_encoder, "exact")
    after, expected = vectors(coll), vectors(fresh)
    assert set(after) == set(expected) and "late" in after and "green-trousers-1" not in after
    for item_id in after:
        np.testing.assert_allclose(after[item_id], expected[item_id], atol=1e-5)


def open_image(shop, source):
    from PIL import Image

    return Image.open(source).convert("RGB")


def test_keep_old_then_rollback(shop, tmp_path, old_encoder, new_encoder):
    coll = build(shop, tmp_path / "c", old_encoder, "exact")
    before = vectors(coll)
    with pytest.raises(ReindexError, match="kept no earlier vectors"):
        rollback(coll, progress=False)
    reindex(coll, new_encoder, keep_old=True, batch_size=4, progress=False)
    assert coll.previous_encoder() == EncoderSettings.of(old_encoder)
    (shop / "extra.jpg").write_bytes((shop / "red-shirt-1.jpg").read_bytes())
    index_catalogue(coll, open_catalogue(shop), new_encoder, batch_size=4, progress=False)
    report = rollback(coll, batch_size=4, progress=False)
    assert report.embedded == 1 and coll.encoder_version == old_encoder.version
    assert coll.previous_encoder() is None
    after = vectors(coll)
    for item_id, vector in before.items():
        np.testing.assert_array_equal(after[item_id], vector)  # the kept vectors, bit for bit
    np.testing.assert_allclose(after["extra"], before["red-shirt-1"], atol=1e-5)  # embedded by the old encoder


def test_bad_input_leaves_the_old_state(shop, tmp_path, old_encoder, new_encoder, monkeypatch):
    coll = build(shop, tmp_path / "c", old_encoder, "exact")
    before = vectors(coll)
    with pytest.raises(ReindexError, match="already embedded"):
        reindex(coll, old_encoder, progress=False)
    with indexing_lock(tmp_path / "c"), pytest.raises(CollectionBusyError, match="another process"):
        reindex(coll, new_encoder, progress=False)
    (shop / "blue-shirt-0.jpg").unlink()
    with pytest.raises(ReindexError, match="1 item.*old vectors: blue-shirt-0"):
        reindex(coll, new_encoder, batch_size=4, progress=False)

    def full(self, keep_old):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(LocalStage, "switch", full)
    coll.remove(["blue-shirt-0"])
    with pytest.raises(DiskFullError, match="Free some space.*resumes"):
        reindex(coll, new_encoder, batch_size=4, progress=False)
    monkeypatch.undo()
    assert coll.encoder_version == old_encoder.version
    for item_id, vector in vectors(coll).items():
        np.testing.assert_array_equal(vector, before[item_id])
    assert reindex(coll, new_encoder, batch_size=4, progress=False).embedded == 0  # all staged before


def test_cli_reindex(shop, tmp_path, old_encoder):
    coll = build(shop, tmp_path / "c", old_encoder, "exact")
    coll.close()
    runner = CliRunner()
    result = runner.invoke(app, ["reindex", "--collection", str(tmp_path / "c")])
    assert result.exit_code != 0 and "one of --encoder, --model or --rollback" in result.output
    result = runner.invoke(app, ["reindex", "--collection", str(tmp_path / "c"), "--encoder",
                                 "efficientnet-lite0-int8", "--keep-old", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["items"] == 12 and report["kept_old"] and report["encoder"].startswith("efficientnet-lite0-int8")
    result = runner.invoke(app, ["reindex", "--collection", str(tmp_path / "c"), "--rollback", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embedded"] == 0
    with Collection.open(tmp_path / "c") as c:
        assert c.encoder_name == "efficientnet-lite0"
    # a model from `vestis train`: its run folder holds model.onnx
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(builtin_model_path("efficientnet-lite0-int8"), run / "model.onnx")
    result = runner.invoke(app, ["reindex", "--collection", str(tmp_path / "c"), "--model", str(run)])
    assert result.exit_code == 0, result.output
    assert "switched" in result.output
    with Collection.open(tmp_path / "c") as c:
        assert c.encoder_source == str((run / "model.onnx").resolve()) and c.encoder_name == "model"


def test_items_embedded_before_the_switch_are_refused_after_it(shop, tmp_path, old_encoder, new_encoder):
    from vestis.errors import EncoderMismatchError
    from vestis.store.ingest import build_items

    coll = build(shop, tmp_path / "c", old_encoder, "exact")
    server = Collection.open(tmp_path / "c")  # a server's handle: it embedded an upload with the old encoder
    late = [it for batch in build_items(old_encoder, list(open_catalogue(shop))[:1], {}, "uploads", progress=False)
            for it in batch[0]]
    late[0].id = "upload"
    reindex(coll, new_encoder, batch_size=4, progress=False)
    with pytest.raises(EncoderMismatchError):
        server.upsert(late)  # written as the new encoder's, it would be searched against the new vectors
    assert "upload" not in server and len(server) == 12


def test_sigkill_mid_reindex_leaves_the_old_state_and_a_rerun_resumes(tmp_path, old_encoder, new_encoder):
    from tests.conftest import garment_image, jpeg_bytes

    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(80):
        rgb = ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256)
        (folder / f"img{n:03d}.jpg").write_bytes(jpeg_bytes(garment_image(rgb, SHAPES[n % 2], seed=n)))
    coll = build(folder, tmp_path / "c", old_encoder, "exact")
    before = vectors(coll)
    coll.close()
    cmd = [sys.executable, "-m", "vestis", "reindex", "--collection", str(tmp_path / "c"), "--encoder",
           new_encoder.name, "--batch-size", "4", "--json"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staged, deadline = 0, time.time() + 240
    while time.time() < deadline and proc.poll() is None and staged < 12:
        try:
            with sqlite3.connect(f"file:{tmp_path / 'c' / 'collection.sqlite'}?mode=ro", uri=True, timeout=1) as conn:
                staged = conn.execute("SELECT COUNT(*) FROM reindex_vectors").fetchone()[0]
        except sqlite3.Error:  # the staging table is not there yet
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the reindex finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Collection.open(tmp_path / "c") as old:
        assert old.encoder_version == old_encoder.version
        for item_id, vector in vectors(old).items():
            np.testing.assert_array_equal(vector, before[item_id])
        hits, _scores, _n = old.search_vectors(before["img007"], 1)
        assert old.items_by_vid(hits)[0].id == "img007"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resumed"] >= 12 and report["resumed"] + report["embedded"] == report["items"] == 80

"""`vestis eval` over a collection: splits, index backends, attribute MAP, reports; the fpi300 cross-check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import garment_image, jpeg_bytes
from vestis.cli import app
from vestis.eval.run import EvalConfig, evaluate_collection, run_eval
from vestis.store.collection import Collection, NewItem

COLOURS = {"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60)}


@pytest.fixture
def clustered(tmp_path):
    """30 items in 3 tight clusters (one per colour); vectors synthetic, images real JPEGs."""
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:3]
    coll = Collection.create(tmp_path / "c", encoder_name="e", encoder_version="e/1", dim=8, colour_dim=4)
    items = []
    for n in range(30):
        colour = list(COLOURS)[n % 3]
        v = centres[n % 3] + 0.05 * rng.standard_normal(8).astype(np.float32)
        path = tmp_path / f"{n}.jpg"
        path.write_bytes(jpeg_bytes(garment_image(COLOURS[colour], seed=n)))
        meta = {"colour": colour, "size": "S" if n % 2 else "L"}
        items.append(NewItem(id=f"i{n}", source=str(path), hash=str(n), vector=v / np.linalg.norm(v),
                             colour=np.ones(4, np.float32) / 2, metadata=meta))
    coll.upsert(items)
    coll.persist()
    return coll


def test_leave_one_out_on_clusters_is_perfect_and_never_counts_self(clustered):
    metrics, _ = evaluate_collection(clustered, EvalConfig(group=["colour"], ks=[1, 9]))
    assert metrics["P@1"] == 1.0 and metrics["mAP@9"] == 1.0
    # 9 other items share each cluster: P@10 must be 0.9, it would be 1.0 if the query counted itself
    metrics, _ = evaluate_collection(clustered, EvalConfig(group=["colour"], ks=[10]))
    assert metrics["P@10"] == pytest.approx(0.9)
    # "size" is unrelated to the vectors: far from perfect
    metrics, _ = evaluate_collection(clustered, EvalConfig(group=["size"], ks=[1]))
    assert metrics["P@1"] < 0.8


def test_index_backend_ranking_and_ann_recall(clustered):
    metrics, _ = evaluate_collection(clustered, EvalConfig(group=["colour"], ks=[1, 5], index="hnsw"))
    assert metrics["P@1"] == 1.0 and metrics["ann_recall@10"] > 0.9


def test_eval_ranks_through_the_store_the_same_on_milvus_and_exactly_as_brute_force(clustered, tmp_path):
    """`vestis eval` asks the store: a Milvus Lite copy of the collection scores the same, and the
    ranking is the brute-force one with each query left out (colour fused, kNN from it)."""
    pytest.importorskip("milvus_lite")
    from vestis.eval.protocols import group_labels, leave_one_out
    from vestis.store.factory import create_collection

    cfg = EvalConfig(group=["size"], ks=[1, 5, 10], colour_weight=0.5, knn=3)
    local, context = evaluate_collection(clustered, cfg)
    with create_collection(f"milvus-lite:{tmp_path / 'm.db'}", encoder_name="e", encoder_version="e/1", dim=8,
                           colour_dim=4) as milvus:
        milvus.upsert([NewItem(it.id, it.source, it.hash, *clustered.vector_of(it.id), it.metadata)
                       for it in clustered.iter_items()])
        on_milvus = evaluate_collection(milvus, cfg)[0]
    assert on_milvus.keys() == local.keys()
    for key, value in local.items():
        assert on_milvus[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    _, vectors, colours = clustered.table().view
    fused = np.hstack([vectors, np.sqrt(0.5) * colours])
    labels = group_labels([it.metadata for it in context["items"]], ["size"])
    expected = leave_one_out(fused, labels, (1, 5, 10), include_queries_without_relevant=True)
    assert {k: local[k] for k in expected} == pytest.approx(expected)


def test_split_is_created_saved_and_reused(clustered):
    cfg = EvalConfig(group=["colour"], ks=[1], queries="test", gallery=["train", "val", "test"])
    metrics, _ = evaluate_collection(clustered, cfg)
    split_files = list((clustered.path / "splits").glob("*.csv"))
    assert len(split_files) == 1
    assert 0 < metrics["n_queries_total"] < 30 and metrics["n_gallery"] == 30
    first = split_files[0].read_text()
    evaluate_collection(clustered, cfg)
    assert split_files[0].read_text() == first


def test_attribute_map_and_report(clustered, tmp_path):
    out = tmp_path / "report"
    metrics = run_eval(clustered.path, EvalConfig(group=["colour"], attributes=["colour", "size"], ks=[1, 5]),
                       report_dir=out, command="vestis eval ...")
    assert metrics["attributes"]["colour"]["mAP"] == pytest.approx(1.0)
    assert metrics["attributes"]["size"]["mAP"] < 0.9
    assert (out / "report.md").exists() and (out / "metrics_at_k.png").exists()
    grids = sorted(out.glob("example-*.png"))
    assert grids, "the report shows example query grids"
    assert json.loads((out / "metrics.json").read_text())["P@1"] == 1.0


def test_cli_eval_json_and_errors(clustered):
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "-c", str(clustered.path), "--group", "colour", "--k", "1,5", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["P@1"] == 1.0
    res = runner.invoke(app, ["eval", "-c", str(clustered.path), "--attribute", "size", "--json"])
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)["attributes"]) >= {"size"}
    res = runner.invoke(app, ["eval", "-c", str(clustered.path)])
    assert res.exit_code != 0


@pytest.mark.slow
@pytest.mark.shared
def test_cross_check_fpi300_precision(fpi300_collection):
    """ImageNet EfficientNet-Lite0 + exact search, leave-one-out, articleType+baseColour:
    independently measured P@10 = 0.180 and R@1 = 0.240 (all queries counted)."""
    metrics, _ = evaluate_collection(fpi300_collection, EvalConfig(group=["articleType", "baseColour"], ks=[1, 10]))
    assert metrics["P@10"] == pytest.approx(0.180, abs=0.02)
    assert metrics["R@1"] == pytest.approx(0.240, abs=0.02)

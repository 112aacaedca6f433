"""Automatic index choice (``auto``), the generated-vector model and the ANN benchmark harness (issue 7).

Backend correctness (same top-1 as exact, save/load) is covered by test_index_backends.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from threadpoolctl import threadpool_limits

from vestis.eval.metrics import ann_recall_at_k
from vestis.index import auto, make_index
from vestis.index.backend import exact_search
from vestis.bench.ann import BenchSettings, knn_recall, run_ann_bench
from vestis.bench.ann_report import pareto
from vestis.bench.datasets import prepare_dataset
from vestis.bench.synthetic import MixtureModel, neighbour_stats
from vestis.store.collection import Collection, NewItem


@pytest.fixture(autouse=True)
def one_thread():
    """Idle OpenMP / BLAS threads spinning on a small shared machine slow FAISS down badly."""
    with threadpool_limits(1):
        yield


# --- choose_index ------------------------------------------------------------------------------


def test_auto_is_exact_below_the_threshold_and_ann_above():
    limit = auto.exact_limit(1280)
    assert limit * 1280 * 4 <= auto.EXACT_MAX_BYTES < (limit + 1) * 1280 * 4
    assert auto.choose_index(0, 1280) == auto.choose_index(limit, 1280) == "exact"
    assert auto.choose_index(limit + 1, 1280) == auto.ANN_SPEC
    assert auto.exact_limit(64) * 64 * 4 <= auto.EXACT_MAX_BYTES < (auto.exact_limit(64) + 1) * 64 * 4
    make_index(auto.ANN_SPEC, 1280)  # a valid spec


def test_auto_keeps_the_ann_index_until_half_the_threshold():
    limit = auto.exact_limit(128)
    assert auto.choose_index(limit - 1, 128, current=auto.ANN_SPEC) == auto.ANN_SPEC
    assert auto.choose_index(limit // 2 + 1, 128, current=auto.ANN_SPEC) == auto.ANN_SPEC
    assert auto.choose_index(limit // 2, 128, current=auto.ANN_SPEC) == "exact"
    assert auto.choose_index(limit - 1, 128, current="exact") == "exact"
    assert auto.concrete_spec("ivf:nprobe=8", 10**9, 128) == "ivf:nprobe=8"
    assert auto.concrete_spec(" AUTO ", 10**9, 128) == auto.ANN_SPEC


@pytest.mark.slow
def test_ann_spec_that_auto_picks_reaches_the_recall_target_on_generated_vectors():
    """40,000 generated 64-d vectors (a clustered mixture), 300 held-out queries."""
    spec = auto.choose_index(auto.exact_limit(64) + 1, 64)
    assert spec != "exact"
    vectors = MixtureModel.random(64, seed=3).sample(40_300, seed=4)
    base, queries = vectors[:40_000], vectors[40_000:]
    index = make_index(spec, 64)
    index.add(np.arange(len(base)), base)
    truth = exact_search(queries, base, 10)[1]
    assert ann_recall_at_k(index.search(queries, 10)[1], truth, 10) >= 0.95


# --- the collection resolves auto as it grows --------------------------------------------------

DIM = 16


def _items(rng, start: int, count: int) -> list[NewItem]:
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [NewItem(id=f"i{start + i}", source=f"s{start + i}", hash=str(start + i), vector=v)
            for i, v in enumerate(vectors)]


def test_collection_resolves_auto_by_size_and_info_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(auto, "EXACT_MAX_BYTES", 200 * DIM * 4)  # exact up to 200 items at dim 16
    monkeypatch.setattr(auto, "ANN_SPEC", "hnsw:M=16")
    rng = np.random.default_rng(0)
    coll = Collection.create(tmp_path / "c", encoder_name="e", encoder_version="e/1", dim=DIM, colour_dim=0,
                             index_spec="auto")
    coll.upsert(_items(rng, 0, 150))
    coll.persist()
    info = coll.info()
    assert (info["index"], coll.uses_ann) == ("exact", False)
    assert info["index_choice"] == "auto: exact up to 200 items at dim 16, then hnsw:M=16"
    assert not list(tmp_path.glob("c/index-*"))

    coll.upsert(_items(rng, 150, 100))
    coll.persist()
    assert (coll.info()["index"], coll.uses_ann) == ("hnsw:M=16", True)
    assert json.loads((tmp_path / "c" / "index.json").read_text())["spec"].startswith("hnsw:M=16")
    coll.close()

    reopened = Collection.open(tmp_path / "c")
    assert (reopened.index_spec, reopened.active_index_spec) == ("auto", "hnsw:M=16")
    index = reopened.index()
    assert len(index) == 250
    query, _ = reopened.vector_of("i42")
    assert index.search(query, 1)[1][0, 0] == reopened.get("i42").vid

    reopened.remove([f"i{i}" for i in range(140)])  # 110 left: above half the threshold, keeps the graph
    reopened.persist()
    assert reopened.active_index_spec == "hnsw:M=16"
    reopened.remove([f"i{i}" for i in range(140, 160)])  # 90 left
    reopened.persist()
    assert (reopened.active_index_spec, reopened.uses_ann) == ("exact", False)
    assert not list(tmp_path.glob("c/index-*"))

    reopened.set_index_spec("ivf:nlist=4")  # an explicit spec overrides auto
    assert reopened.info()["index"] == "ivf:nlist=4"
    assert reopened.info()["index_choice"] == "explicit"


# --- generated vectors ---------------------------------------------------------------------------


def test_mixture_fitted_to_vectors_reproduces_their_neighbour_structure():
    real = MixtureModel.random(48, clusters=20, rank=6, seed=1).sample(12_000, seed=2)
    model = MixtureModel.fit(real[:11_000], clusters=20, rank=6, label="test vectors")
    fake = model.sample(12_000, seed=5)
    assert fake.dtype == np.float32 and np.allclose(np.linalg.norm(fake, axis=1), 1, atol=1e-5)
    real_stats = neighbour_stats(real[:11_000], real[11_000:])
    fake_stats = neighbour_stats(fake[:11_000], fake[11_000:])
    for key, value in real_stats.items():
        assert fake_stats[key] == pytest.approx(value, abs=0.03), key
    other = MixtureModel.random(48, clusters=20, rank=6, seed=9).sample(12_000, seed=2)  # a different mixture
    assert abs(neighbour_stats(other[:11_000], real[11_000:])["nn1_cos_median"] - real_stats["nn1_cos_median"]) > 0.1


def test_npy_source_holds_queries_out_of_the_indexed_set(tmp_path):
    vectors = MixtureModel.random(8, seed=0).sample(600, seed=1)
    np.save(tmp_path / "v.npy", vectors)
    data = prepare_dataset(str(tmp_path / "v.npy"), queries=50, n=400, cache_dir=tmp_path / "cache", log=lambda s: None)
    base, queries, truth, truth_scores = data.arrays()
    assert (base.shape, queries.shape, truth.shape, truth_scores.shape) == ((400, 8), (50, 8), (50, 10), (50, 10))
    assert np.allclose(truth_scores, np.take_along_axis(queries @ base.T, truth, axis=1), atol=1e-6)
    rows = {name: {r.tobytes() for r in np.asarray(a)} for name, a in
            (("base", base), ("queries", queries), ("all", vectors))}
    assert not rows["base"] & rows["queries"]
    assert rows["base"] | rows["queries"] <= rows["all"]
    assert data.meta["generated"] is False
    again = prepare_dataset(str(tmp_path / "v.npy"), queries=50, n=400, cache_dir=tmp_path / "cache", log=lambda s: None)
    assert again.directory == data.directory  # cached


def test_knn_recall_counts_any_of_tied_neighbours():
    base = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3]]  # rows 0 and 1 are the same vector
    queries = np.eye(4, dtype=np.float32)[:1]
    truth_scores = np.array([[1.0, 1.0]], np.float32)  # top-2 of query e0: rows 0 and 1, both cosine 1
    assert knn_recall(np.array([[1, 0]]), queries, base, truth_scores, 2) == 1.0
    assert knn_recall(np.array([[1, 2]]), queries, base, truth_scores, 2) == 0.5
    assert knn_recall(np.array([[0, -1]]), queries, base, truth_scores, 2) == 0.5
    truth_scores_top1 = np.array([[1.0]], np.float32)
    assert knn_recall(np.array([[1]]), queries, base, truth_scores_top1, 1) == 1.0  # the duplicate counts


def test_pareto_keeps_points_not_beaten_on_recall_and_speed():
    assert pareto([(0.9, 100), (0.95, 50), (0.93, 40), (0.99, 60), (0.8, 10)]) == [(0.9, 100), (0.99, 60)]


# --- the harness end to end ------------------------------------------------------------------------

TINY = {
    "k": 10, "build_budget_s": 120, "query_budget_s": 2,
    "backends": {
        "exact": {"exact": True, "builds": [{"spec": "exact"}]},
        "hnsw": {"builds": [{"spec": "hnsw:M=16", "search": {"efSearch": [16, 64]}}]},
        "kmeans": {"builds": [{"spec": "kmeans:clusters=20,train_min=100", "search": {"probe": [1, 4]}}]},
        "annoy": {"builds": [{"spec": "annoy", "max_n": 100, "note": "too big for this test"}]},
    },
}


def test_bench_ann_writes_table_plot_and_json(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(TINY))
    result = run_ann_bench("generated", tmp_path / "out", n=2000, dim=16, queries=100, config=config,
                           cache_dir=tmp_path / "cache", settings=BenchSettings(), command="test", log=lambda s: None)
    rows = {(r["backend"], json.dumps(r.get("params"))): r for r in result["points"]}
    assert set(rows) == {("exact", "{}"), ("hnsw", '{"efSearch": 16}'), ("hnsw", '{"efSearch": 64}'),
                         ("kmeans", '{"probe": 1}'), ("kmeans", '{"probe": 4}'), ("annoy", "null")}
    assert rows["exact", "{}"]["recall"] == 1.0
    assert rows["hnsw", '{"efSearch": 64}']["recall"] >= 0.95
    assert rows["kmeans", '{"probe": 1}']["recall"] < rows["kmeans", '{"probe": 4}']["recall"]
    assert rows["annoy", "null"] == {"backend": "annoy", "spec": "annoy", "exact": False, "skipped": True,
                                     "note": "too big for this test"}
    exact = rows["exact", "{}"]
    assert exact["disk_bytes_per_item"] >= 16 * 4 and exact["mem_bytes_per_item"] > 0
    assert 0 < exact["p50_ms"] <= exact["p99_ms"] and exact["batch_qps"] > 0 and exact["single_queries"] == 100
    assert set(result["best"]) >= {"exact", "hnsw"}

    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["dataset"]["generated"] is True and saved["dataset"]["label"].startswith("GENERATED 2,000 x 16")
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| backend | spec |" in md and "GENERATED" in md and "too big for this test" in md
    with Image.open(tmp_path / "out" / "recall_qps.png") as png:
        assert png.format == "PNG" and png.size[0] > 800


def test_bench_ann_stops_a_build_over_its_budget_and_reports_a_failing_spec(tmp_path):
    config = {"k": 10, "backends": {"hnsw": {"builds": [{"spec": "hnsw"}]},
                                    "bad": {"builds": [{"spec": "faiss:IVF4,PQ3"}]}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))

    def run(backend: str, budget: float | None) -> dict:
        settings = BenchSettings(backends=[backend], build_budget_s=budget, query_budget_s=1)
        result = run_ann_bench("generated", tmp_path / "out", n=500, dim=16, queries=20, config=tmp_path / "sweep.yaml",
                               cache_dir=tmp_path / "cache", settings=settings, log=lambda s: None)
        (row,) = result["points"]
        return row

    hnsw = run("hnsw", 0.01)  # a fresh process cannot even import numpy in 10 ms
    assert hnsw["skipped"] and hnsw["note"] == "build did not finish within 0 s: stopped"
    bad = run("bad", None)
    assert bad["skipped"] and bad["note"].startswith("failed: IndexSpecError: bad index spec 'faiss:IVF4,PQ3'")

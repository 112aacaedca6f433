"""Every index backend against exact search on easy data: 2,000 random unit vectors (dim 64) under
scattered ids, queried with slightly perturbed copies of stored vectors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from vestis.errors import IndexSpecError, VestisError
from vestis.index import BACKENDS, IndexInputError, describe_specs, load_index, make_index

DIM, N, NQ = 64, 2000, 300

# ivfpq's default nbits=8 would need 9,984 vectors before training; a smaller PQ, forest and cluster
# count keep the builds quick.
SPECS = ["exact", "flat", "hnsw", "ivf", "ivfpq:nlist=16,m=8,nbits=4", "lsh", "faiss:IVF32,Flat?nprobe=8",
         "faiss:HNSW16", "annoy:trees=20", "kdtree", "kmeans:clusters=20,probe=4"]
SEEDED = [s for s in SPECS if "hnsw" not in s.lower()]  # FAISS inserts HNSW nodes in parallel


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On a small shared machine, idle OpenMP / BLAS threads spinning against each other make
    FAISS training 10-100x slower; the behaviour under test does not depend on threads."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def data() -> SimpleNamespace:
    rng = np.random.default_rng(7)
    vectors = unit(rng.standard_normal((N, DIM)))
    ids = rng.choice(10**9, N, replace=False).astype(np.int64)  # scattered, in random order
    sources = rng.choice(N, NQ, replace=False)
    queries = unit(vectors[sources] + 0.02 * rng.standard_normal((NQ, DIM)))
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    return SimpleNamespace(vectors=vectors, ids=ids, sources=sources, queries=queries, truth=ids[truth],
                           fresh=lambda n, seed: unit(np.random.default_rng(seed).standard_normal((n, DIM))))


@pytest.fixture(scope="module")
def library(data, tmp_path_factory):
    """spec -> (index holding the data, directory it was saved to); built once per module."""
    cache = {}

    def get(spec: str):
        if spec not in cache:
            index = make_index(spec, DIM)
            index.add(data.ids, data.vectors)
            directory = tmp_path_factory.mktemp("index")
            index.save(directory)
            cache[spec] = (index, directory)
        return cache[spec]

    return get


def fresh_copy(library, spec):
    return load_index(library(spec)[1])


def exact_cosines(data, ids, queries):
    row = {i: r for r, i in enumerate(data.ids.tolist())}
    vecs = data.vectors[np.vectorize(row.get)(ids)]
    return np.einsum("qkd,qd->qk", vecs, queries)


@pytest.mark.parametrize("spec", SPECS)
def test_top1_matches_exact_search(library, data, spec):
    index, _ = library(spec)
    scores, ids = index.search(data.queries, 10)
    assert ids.shape == scores.shape == (NQ, 10)
    assert (ids[:, 0] == data.truth[:, 0]).mean() >= 0.99
    assert (ids[:, 0] == data.ids[data.sources]).mean() >= 0.99
    if spec != "exact":
        assert index.info()["built"] == N  # the approximate structure answered, not the exact fallback


@pytest.mark.parametrize("spec", SPECS)
def test_scores_are_exact_cosines_best_first(library, data, spec):
    scores, ids = library(spec)[0].search(data.queries[:50], 10)
    assert (ids >= 0).all() and all(len(set(row)) == 10 for row in ids.tolist())
    np.testing.assert_allclose(scores, exact_cosines(data, ids, data.queries[:50]), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-7).all()


@pytest.mark.parametrize("spec", SPECS)
def test_removed_ids_never_return_and_adds_still_work(library, data, spec):
    index = fresh_copy(library, spec)
    gone = data.ids[data.sources[:100]]  # the nearest neighbours of the first 100 queries
    assert index.remove(np.concatenate([gone, [123, 456]])) == 100
    assert index.remove(gone) == 0 and len(index) == N - 100
    _, ids = index.search(data.queries, 10)
    assert not np.isin(ids, gone).any() and (ids >= 0).all()
    assert (ids[100:, 0] == data.ids[data.sources[100:]]).mean() >= 0.99

    more = np.setdiff1d(data.ids[:700], gone)[:500]  # 30% removed in all: past the tombstone limit
    index.remove(more)
    _, ids = index.search(data.queries, 10)
    assert not np.isin(ids, np.concatenate([gone, more])).any() and (ids >= 0).all()

    new_ids = np.arange(50) + 10**10
    new_vectors = data.fresh(50, seed=1)
    index.add(new_ids, new_vectors)
    _, ids = index.search(unit(new_vectors + 0.02 * data.fresh(50, seed=2)), 10)
    assert (ids[:, 0] == new_ids).mean() >= 0.98 and len(index) == N - 600 + 50
    if spec != "exact":
        assert index.info()["tombstones"] == 0  # compacted and rebuilt


@pytest.mark.parametrize("spec", SPECS)
def test_readding_an_id_replaces_its_vector(library, data, spec):
    index = fresh_copy(library, spec)
    target, replacement = data.ids[data.sources[0]], data.fresh(1, seed=3)
    index.add(np.array([target]), replacement)
    assert len(index) == N
    scores, ids = index.search(replacement, 5)
    assert ids[0, 0] == target and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    scores, ids = index.search(data.queries[:1], 10)
    assert ids[0, 0] != target
    if target in ids[0]:
        assert scores[0, list(ids[0]).index(target)] == pytest.approx(float(replacement[0] @ data.queries[0]),
                                                                      abs=1e-5)


@pytest.mark.parametrize("spec", SPECS)
def test_save_load_round_trip_then_keep_editing(library, data, spec, tmp_path):
    index, directory = library(spec)
    loaded = load_index(directory)
    assert type(loaded) is type(index) and loaded.spec == index.spec and len(loaded) == N
    before, after = index.search(data.queries, 10), loaded.search(data.queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)

    loaded.remove(data.ids[data.sources[:10]])
    loaded.add(np.array([10**11]), data.fresh(1, seed=4))
    _, ids = loaded.search(np.concatenate([data.queries[:10], data.fresh(1, seed=4)]), 5)
    assert not np.isin(ids, data.ids[data.sources[:10]]).any() and ids[-1, 0] == 10**11
    loaded.save(tmp_path)
    again = load_index(tmp_path)
    np.testing.assert_array_equal(again.search(data.queries[:20], 5)[1],
                                  loaded.search(data.queries[:20], 5)[1])


@pytest.mark.parametrize("spec", SPECS)
def test_padding_when_k_exceeds_the_count(library, data, spec):
    empty = make_index(spec, DIM)
    scores, ids = empty.search(data.queries[:3], 4)
    assert (ids == -1).all() and np.isneginf(scores).all() and scores.dtype == np.float32

    small = make_index(spec, DIM)
    small.add(data.ids[:5], data.vectors[:5])
    scores, ids = small.search(data.queries[:3], 8)
    assert sorted(ids[0, :5].tolist()) == sorted(data.ids[:5].tolist())
    assert (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all() and np.isfinite(scores[:, :5]).all()

    scores, ids = library(spec)[0].search(data.queries[:2], N + 5)  # built structure, k > n
    assert (np.sort(ids[:, :N], axis=1) == np.sort(data.ids)).all() and (ids[:, N:] == -1).all()


@pytest.mark.parametrize("spec", SPECS)
def test_single_query_and_input_errors(library, data, spec):
    index, _ = library(spec)
    scores, ids = index.search(data.queries[0], 5)
    assert ids.shape == scores.shape == (1, 5)
    np.testing.assert_array_equal(ids[0], index.search(data.queries[:1], 5)[1][0])
    for bad_call in (lambda: index.search(np.ones((2, DIM + 1), np.float32), 3),
                     lambda: index.search(data.queries[:2], 0),
                     lambda: make_index(spec, DIM).add(np.array([1]), data.vectors[:1, :10]),
                     lambda: make_index(spec, DIM).add(np.array([1]), 2 * data.vectors[:1]),
                     lambda: make_index(spec, DIM).add(np.array([1, 1]), data.vectors[:2]),
                     lambda: make_index(spec, DIM).add(np.array([-1]), data.vectors[:1])):
        with pytest.raises(IndexInputError) as err:
            bad_call()
        assert isinstance(err.value, ValueError) and isinstance(err.value, VestisError)


@pytest.mark.parametrize("spec", SPECS)
def test_spec_recreates_the_index(spec):
    index = make_index(spec, DIM)
    assert make_index(index.spec, DIM).spec == index.spec
    assert index.spec.split(":")[0] in BACKENDS


@pytest.mark.parametrize("spec", SEEDED)
def test_builds_are_deterministic_for_a_seed(library, data, spec):
    index = make_index(spec, DIM)
    index.add(data.ids, data.vectors)
    np.testing.assert_array_equal(index.search(data.queries, 10)[1],
                                  library(spec)[0].search(data.queries, 10)[1])


EXHAUSTIVE = [("ivf", {"nprobe": 10**6}), ("faiss:HNSW16", {"efSearch": 2000}),
              ("annoy:trees=20", {"search_k": 10**6}), ("kmeans:clusters=20,probe=4", {"probe": 20})]


@pytest.mark.parametrize(("spec", "params"), EXHAUSTIVE)
def test_search_params_change_after_load(library, data, spec, params, tmp_path):
    index = fresh_copy(library, spec)
    index.set_params(**params)
    key, value = next(iter(params.items()))
    assert f"{key}={value}" in index.spec
    np.testing.assert_array_equal(index.search(data.queries, 10)[1], data.truth)  # exhaustive setting
    index.save(tmp_path)
    assert load_index(tmp_path).spec == index.spec
    with pytest.raises(IndexSpecError, match="search-time parameters"):
        index.set_params(seed=3)
    with pytest.raises(IndexSpecError, match="unknown parameter"):
        index.set_params(bogus=3)


def test_trainable_index_is_exact_until_trained_and_retrains_on_growth(data):
    index = make_index("ivf:nprobe=1", DIM)
    index.add(data.ids[:500], data.vectors[:500])
    exact = make_index("exact", DIM)
    exact.add(data.ids[:500], data.vectors[:500])
    np.testing.assert_array_equal(index.search(data.queries, 10)[1], exact.search(data.queries, 10)[1])
    assert index.info()["built"] == 0 and index.info()["factory"] is None
    index.add(data.ids[500:1200], data.vectors[500:1200])
    index.build()
    assert index.info()["factory"] == "IVF30,Flat"  # auto nlist: min(4 sqrt(n), n / 39)
    index.add(data.ids[1200:], data.vectors[1200:])
    index.build()
    assert index.info()["factory"] == "IVF30,Flat" and index.info()["built"] == N  # extended, not retrained
    index.add(np.arange(500) + 10**10, data.fresh(500, seed=5))
    index.build()
    assert index.info()["factory"] == "IVF64,Flat" and index.info()["trained_rows"] == N + 500  # doubled


@pytest.mark.parametrize("spec", ["annoy:trees=20", "kdtree"])
def test_immutable_structures_search_a_delta_then_rebuild(library, data, spec):
    index = fresh_copy(library, spec)
    index.search(data.queries[:1], 1)  # a loaded KD-tree is rebuilt on first use
    index.add(np.arange(100) + 10**10, data.fresh(100, seed=6))
    _, ids = index.search(data.fresh(100, seed=6), 1)
    assert (ids[:, 0] == np.arange(100) + 10**10).all() and index.info()["built"] == N  # from the delta
    index.add(np.arange(200) + 10**11, data.fresh(200, seed=8))
    index.search(data.queries[:1], 1)
    assert index.info()["built"] == N + 300  # delta passed 10%: rebuilt


BAD_SPECS = ["nope", "hnsw:M=abc", "hnsw:bogus=1", "ivf:nlist=0", "faiss:", "faiss:NotAnIndex",
             "hnsw:efSearch", "faiss:HNSW32?nprobe=4", "annoy:jobs=0", "exact:x=1", "ivfpq:m=7",
             "kmeans:probe=auto"]


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_bad_specs_list_the_valid_ones(spec):
    with pytest.raises(IndexSpecError) as err:
        make_index(spec, DIM)
    assert repr(spec) in str(err.value) and describe_specs() in str(err.value)


def test_describe_specs_names_every_backend_and_default():
    text = describe_specs()
    assert all(f"  {name} " in text for name in BACKENDS)
    assert "efSearch=64*" in text and "nlist=auto" in text and "clusters=50" in text
    assert "  auto " in text and "13,107 items" in text


def test_load_index_explains_missing_or_foreign_directories(tmp_path):
    with pytest.raises(VestisError, match=r"index\.json"):
        load_index(tmp_path)
    (tmp_path / "index.json").write_text('{"format": 1, "backend": "martian"}')
    with pytest.raises(VestisError, match="martian"):
        load_index(tmp_path)


EXHAUSTIVE_SPECS = ["exact", "flat", "kdtree", "ivf:nprobe=100000,train_min=100",
                    "annoy:trees=4,search_k=1000000",
                    "kmeans:clusters=8,probe=8,train_min=100"]


@pytest.mark.parametrize("mmap", [False, True], ids=["in-memory", "mapped"])
@pytest.mark.parametrize("spec", EXHAUSTIVE_SPECS)
def test_random_edits_match_a_brute_force_model(spec, mmap, tmp_path):
    """Interleaved adds, re-adds, removes, searches and a save/load, with settings under which every
    backend must answer exactly: exercises the delta, tombstone, compaction and retraining paths,
    on vectors read into memory or mapped from the saved file (which edits must leave as saved)."""
    rng = np.random.default_rng(11)
    index, model = make_index(spec, 16), {}
    for step in range(60):
        ids = rng.choice(600, rng.integers(1, 60), replace=False)
        vectors = unit(rng.standard_normal((len(ids), 16)))
        index.add(ids, vectors)
        model.update(zip(ids.tolist(), vectors, strict=True))
        gone = rng.choice(600, rng.integers(0, 30), replace=False)
        assert index.remove(gone) == len(set(gone.tolist()) & model.keys())
        for i in gone.tolist():
            model.pop(i, None)
        if step == 30:
            index.save(tmp_path)
            saved = (tmp_path / "vectors.npy").read_bytes()
            index = load_index(tmp_path, mmap=mmap)
        queries = unit(rng.standard_normal((5, 16)))
        scores, found = index.search(queries, 7)
        known = np.array(list(model))
        exact = queries @ np.array([model[i] for i in known.tolist()]).T
        order = np.argsort(-exact, axis=1)[:, :7]
        assert len(index) == len(model)
        np.testing.assert_array_equal(found, known[order])
        np.testing.assert_allclose(scores, np.take_along_axis(exact, order, axis=1), atol=1e-5)
    assert (tmp_path / "vectors.npy").read_bytes() == saved

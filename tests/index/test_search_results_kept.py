"""Search speed-ups keep every result: the exact index answers a fixed generated collection as it
always has, and the FAISS path of an up-to-date graph answers exactly as the general path of
``StructuredIndex`` does (same ids, same float32 scores, bit for bit), in every state of the index,
one query or a batch; of exactly equal scores (duplicate vectors) both give the same rows, and a
graph kept in memory and one re-scored from its file give the same order."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from vestis.index import load_index, make_index, vectors
from vestis.index.auto import ANN_SPEC
from vestis.index.backend import IndexInputError, StructuredIndex

DIM = 48


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with threadpool_limits(1):
        yield


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """``n`` unit vectors around 12 centres under scattered ids."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, DIM))
    vectors = unit(centres[rng.integers(0, 12, n)] + 0.8 * rng.standard_normal((n, DIM)))
    return rng.choice(10**6, n, replace=False).astype(np.int64), vectors, rng


# The exact index's answer to three queries over 600 generated vectors, recorded before the search
# path was reworked (ids, and the scores' float32 values in hex).
GOLDEN_IDS = [[650878, 942702, 980136, 586663, 67978], [939943, 521025, 30798, 636788, 560752],
              [79673, 67978, 568505, 84503, 275757]]
GOLDEN_SCORES = [["0x1.8535acp-1", "0x1.6249bcp-1", "0x1.4da3c4p-1", "0x1.4939e2p-1", "0x1.43e792p-1"],
                 ["0x1.b2f2bep-1", "0x1.5b19c4p-1", "0x1.5aa134p-1", "0x1.4c8854p-1", "0x1.485d5ep-1"],
                 ["0x1.a7e17ep-1", "0x1.67b9fep-1", "0x1.361fc4p-1", "0x1.342aa6p-1", "0x1.2dfafcp-1"]]


def test_exact_search_answers_a_fixed_collection_as_recorded():
    rng = np.random.default_rng(2026)
    centres = rng.standard_normal((12, DIM))
    vectors = unit(centres[rng.integers(0, 12, 600)] + 0.8 * rng.standard_normal((600, DIM)))
    ids = rng.choice(10**6, 600, replace=False).astype(np.int64)
    queries = unit(vectors[[3, 141, 599]] + 0.1 * rng.standard_normal((3, DIM)).astype(np.float32))
    index = make_index("exact", DIM)
    index.add(ids, vectors)
    scores, found = index.search(queries, 5)
    assert found.tolist() == GOLDEN_IDS
    golden = np.array([[float.fromhex(v) for v in row] for row in GOLDEN_SCORES], np.float32)
    # bit for bit on the machine that recorded them; another CPU's BLAS may round the last bit
    np.testing.assert_array_max_ulp(scores, golden, maxulp=2)


def assert_same_as_general(index, queries: np.ndarray, k: int) -> None:
    for q in queries:
        fast = index.search(q[None], k)
        general = StructuredIndex.search(index, q[None], k)
        assert fast[0].dtype == general[0].dtype == np.float32
        assert np.array_equal(fast[1], general[1])
        assert np.array_equal(fast[0], general[0])


@pytest.fixture(scope="module")
def graph():
    ids, vectors, rng = clustered(3000, 11)
    queries = unit(vectors[rng.choice(3000, 40, replace=False)] + 0.05 * rng.standard_normal((40, DIM)))
    index = make_index(ANN_SPEC, DIM)
    index.add(ids, vectors)
    index.build()
    return index, ids, queries


@pytest.mark.parametrize("k", [1, 10, 64])
def test_single_query_path_matches_the_general_path(graph, k):
    index, _, queries = graph
    assert_same_as_general(index, queries, k)


def test_a_batch_matches_the_general_path(graph):
    index, _, queries = graph
    fast, general = index.search(queries, 10), StructuredIndex.search(index, queries, 10)
    assert np.array_equal(fast[1], general[1]) and np.array_equal(fast[0], general[0])


def test_duplicate_vectors_rank_alike_in_memory_and_from_the_file(tmp_path):
    ids, vectors, rng = clustered(2000, 14)
    copies = rng.choice(2000, 300, replace=False)
    vectors[copies[150:]] = vectors[copies[:150]]  # 150 pairs of equal vectors under different ids
    index = make_index(ANN_SPEC, DIM)
    index.add(ids, vectors)
    index.build()
    index.save(tmp_path)
    mapped = load_index(tmp_path, mmap=True)
    queries = unit(vectors[copies[:40]] + 0.02 * rng.standard_normal((40, DIM)))
    for q in queries:
        fast, from_file = index.search(q[None], 10), mapped.search(q[None], 10)
        general = StructuredIndex.search(index, q[None], 10)
        assert np.array_equal(fast[1], from_file[1]) and np.array_equal(fast[0], from_file[0])
        assert np.array_equal(fast[1], general[1]) and np.array_equal(fast[0], general[0])
    assert any(len(set(index.search(q[None], 10)[0][0].tolist())) < 10 for q in queries)  # ties were met


def test_a_batch_from_the_file_in_parts_ranks_as_in_memory(graph, tmp_path, monkeypatch):
    index, _, queries = graph
    index.save(tmp_path)
    mapped = load_index(tmp_path, mmap=True)
    monkeypatch.setattr(vectors, "GATHER_BUDGET", 3 * 20 * DIM)  # three queries' candidates at a time
    for got, want in zip(mapped.search(queries, 10), index.search(queries, 10), strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("count", [1, 4])
def test_queries_with_nan_or_infinite_values_are_refused(graph, bad, count):
    index, _, queries = graph
    q = queries[:count].copy()
    q[-1, 7] = bad
    with pytest.raises(IndexInputError, match="NaN or infinite"):
        index.search(q, 10)


def test_matches_after_adds_removals_and_a_mapped_reload(graph, tmp_path):
    index, ids, queries = graph
    index.save(tmp_path)
    mapped = load_index(tmp_path, mmap=True)  # rows re-scored by pread from the file
    assert_same_as_general(mapped, queries, 10)
    extra_ids, extra, _ = clustered(50, 12)
    mapped.add(extra_ids + 10**7, extra)  # a delta beside the graph (absorbed on the next search)
    assert_same_as_general(mapped, queries, 10)
    mapped.remove(ids[:100])  # tombstones: the general path filters them
    assert_same_as_general(mapped, queries, 10)
    assert not np.isin(mapped.search(queries, 10)[1], ids[:100]).any()


def test_more_results_than_vectors_are_padded(graph):
    ids, vectors, _ = clustered(1200, 13)
    index = make_index(ANN_SPEC, DIM)
    index.add(ids, vectors)
    scores, found = index.search(vectors[0], 1500)
    assert (found[0] >= 0).sum() == 1200 and (found[0, 1200:] == -1).all()
    assert_same_as_general(index, vectors[:3], 1500)

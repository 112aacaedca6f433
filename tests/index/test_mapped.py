"""Indexes whose float32 vectors stay in the saved file, memory-mapped (``load_index(..., mmap=True)``).

Exactness under edits is covered by test_index_backends.py (``test_random_edits_match_a_brute_force_model``
runs mapped too); here: the auto index's HNSW-SQ8 answers identically mapped or read, its vectors
are really mapped and stay mapped as it grows, and the saved file is never written."""

from __future__ import annotations

import os

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from vestis.index import load_index, make_index
from vestis.index.auto import ANN_SPEC
from vestis.index.mapped import MappedRows

DIM, N = 32, 3000


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(3)
    vectors = unit(rng.standard_normal((N, DIM)))
    ids = rng.choice(10**9, N, replace=False).astype(np.int64)
    with threadpool_limits(1):
        index = make_index(ANN_SPEC, DIM)
        index.add(ids, vectors)
        directory = tmp_path_factory.mktemp("hnsw-sq8")
        index.save(directory)
    queries = unit(vectors[:200] + 0.05 * rng.standard_normal((200, DIM)))
    return directory, ids, vectors, queries


def test_mapped_auto_index_answers_as_the_one_in_memory(saved):
    directory, ids, vectors, queries = saved
    with threadpool_limits(1):
        read, mapped = load_index(directory), load_index(directory, mmap=True)
        assert mapped._store.mapped and not read._store.mapped
        assert mapped.info()["built"] == N  # the HNSW-SQ8 graph answers, re-scored from the file
        expected, got = read.search(queries, 10), mapped.search(queries, 10)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])
    assert (got[1][:, 0] == ids[:200]).mean() >= 0.95


def test_mapped_index_grows_and_edits_without_touching_the_file(saved):
    directory, ids, vectors, queries = saved
    before = (directory / "vectors.npy").read_bytes()
    with threadpool_limits(1):
        index = load_index(directory, mmap=True)
        new = unit(np.random.default_rng(5).standard_normal((500, DIM)))
        index.add(np.arange(500, dtype=np.int64) + 10**10, new)  # past the mapped rows: grows
        index.add(ids[:1], new[-1:])  # an overwrite
        assert index.remove(ids[1:400]) == 399
        scores, found = index.search(new[:50], 1)
    assert (found[:, 0] == np.arange(50) + 10**10).all() and np.allclose(scores, 1.0, atol=1e-5)
    assert len(index) == N + 500 - 399 and index._store.mapped
    assert (directory / "vectors.npy").read_bytes() == before


def test_mapped_rows_read_by_pread_and_move_before_any_write(tmp_path):
    rows = unit(np.random.default_rng(1).standard_normal((100, 8)))
    np.save(tmp_path / "v.npy", rows)
    mapped = MappedRows.open(tmp_path / "v.npy")
    picks = np.array([[3, 97, 3], [0, 50, 99]])
    np.testing.assert_array_equal(mapped.take(picks), rows[picks])
    with pytest.raises(ValueError):
        mapped.array[0] = 0.0  # the saved file is mapped read-only
    moved = mapped.moved(100, 250)
    assert moved.owned and moved.array.shape == (250, 8)
    moved.array[0] = 0.0
    moved.array[200] = rows[5]
    np.testing.assert_array_equal(moved.take(np.array([0, 1, 200])), np.stack([np.zeros(8), rows[1], rows[5]]))
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), rows)


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="reads are counted in /proc/self/io")
def test_opening_saved_rows_reads_the_whole_file_once_in_the_background(tmp_path):
    """Re-scoring reads rows at random: the file is read through when opened, so the OS caches it."""
    np.save(tmp_path / "v.npy", np.ones((4096, 64), np.float32))  # 1 MiB

    def bytes_read() -> int:
        return int(dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())["rchar"])
    before = bytes_read()
    rows = MappedRows.open(tmp_path / "v.npy")
    rows.warming.join(10)
    assert not rows.warming.is_alive()
    assert bytes_read() - before >= (tmp_path / "v.npy").stat().st_size
    assert rows.take(np.array([3, 4095])).tolist() == [[1.0] * 64] * 2

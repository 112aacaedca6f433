"""The one exact top-k kernel (vestis.index.topk) against the three it replaced: the evaluation's
``rank``, the index backends' tiled ``exact_search`` and the 1-D ``top_k``, copied here as they
were. Where the old kernels were exact and deterministic the results are bit-identical."""

from __future__ import annotations

import numpy as np
import pytest

from vestis.index import topk as kernel
from vestis.index.topk import exact_search, top_k, topk


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def old_rank(q, g, k, exclude_self=None, batch_size=512):
    """vestis.eval.protocols.rank before the kernels were merged."""
    n = len(g)
    excl = np.full(len(q), -1, np.int64) if exclude_self is None else np.asarray(exclude_self, np.int64)
    scores = np.full((len(q), k), -np.inf, np.float32)
    indices = np.full((len(q), k), -1, np.int64)
    k_eff = min(k, n)
    for start in range(0, len(q), batch_size):
        stop = min(start + batch_size, len(q))
        s = q[start:stop] @ g.T
        rows = np.flatnonzero(excl[start:stop] >= 0)
        s[rows, excl[start:stop][rows]] = -np.inf
        kth = np.partition(s, n - k_eff, axis=1)[:, n - k_eff]
        row, col = np.nonzero(s >= kth[:, None])
        val = s[row, col]
        order = np.lexsort((col, -val, row))
        row, col, val = row[order], col[order], val[order]
        pos = np.arange(len(row)) - np.searchsorted(row, row)
        keep = pos < k_eff
        scores[start + row[keep], pos[keep]] = val[keep]
        indices[start + row[keep], pos[keep]] = col[keep]
    own = (indices == excl[:, None]) & (excl[:, None] >= 0)
    indices[own], scores[own] = -1, -np.inf
    return scores, indices


def old_top_k(scores, k):
    """vestis.index.vectors.top_k before the kernels were merged."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]


@pytest.mark.parametrize("k", [1, 10, 51, 300])
def test_exact_search_is_bit_identical_to_the_old_evaluation_rank(k):
    q, g = unit(700, 32, 1), unit(300, 32, 2)
    excl = np.where(np.arange(700) % 3 == 0, np.arange(700) % 300, -1)
    want_s, want_i = old_rank(q, g, k, excl)
    got_s, got_i = exact_search(q, g, k, exclude=excl)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_s, want_s)


def test_ties_rank_the_lower_row_first_across_the_cut_and_across_tiles(monkeypatch):
    rng = np.random.default_rng(3)
    g = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 200)]  # 50-odd copies of each vector: ties everywhere
    q = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 30)]
    want_s, want_i = old_rank(q, g, 60)
    monkeypatch.setattr(kernel, "SCORE_BUDGET", 30 * 17)  # tiles of 17 rows: ties cross tile borders
    got_s, got_i = exact_search(q, g, 60)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_s, want_s)


def test_alive_exclude_and_extra_columns():
    q, g = unit(20, 16, 4), unit(90, 16, 5)
    qc, gc = np.abs(unit(20, 6, 6)), np.abs(unit(90, 6, 7))
    alive = np.arange(90) % 4 != 0
    exclude = np.stack([np.arange(20), np.full(20, -1), np.arange(20) + 30], axis=1)
    s, rows = exact_search(q, g, 90, alive=alive, exclude=exclude, extra=(0.5 * qc, gc))
    full = q @ g.T + (0.5 * qc) @ gc.T
    for i in range(20):
        allowed = [r for r in range(90) if alive[r] and r not in (i, i + 30)]
        order = sorted(allowed, key=lambda r: (-full[i, r], r))
        assert rows[i, :len(order)].tolist() == order
        assert (rows[i, len(order):] == -1).all() and np.isneginf(s[i, len(order):]).all()
        np.testing.assert_allclose(s[i, :len(order)], full[i, order], rtol=1e-5)


def test_one_row_top_k_matches_the_old_one_without_ties():
    scores = np.random.default_rng(8).normal(size=1000).astype(np.float32)
    for k in (0, 1, 10, 999, 1000, 2000):
        np.testing.assert_array_equal(top_k(scores, k), old_top_k(scores, k))


def test_topk_pads_and_never_returns_minus_infinity():
    s = np.array([[3.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]], np.float32)
    vals, cols = topk(s, 4)
    assert cols.tolist() == [[0, 2, -1, -1], [-1, -1, -1, -1]]
    assert vals[0, :2].tolist() == [3.0, 1.0] and np.isneginf(vals[:, 2:]).all()

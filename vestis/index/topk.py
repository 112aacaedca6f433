"""The one exact top-k kernel of vestis: row-wise selection of the best scores, and exact search by
inner product built on it (BLAS matrix products over tiles, each tile's best merged).

Every exact ranking goes through here: the exact index backend, the exact delta and fall-back of
the approximate ones, a collection's exact scan, evaluation and training. Results are
deterministic: equal scores rank the lower column (row of ``vectors``) first, and -inf scores
(dead or excluded rows) are never returned; rows are padded with -inf / -1 when fewer than k
candidates exist.
"""

from __future__ import annotations

import numpy as np

SCORE_BUDGET = 1 << 24  # float32 scores held at once by the exact kernels (64 MiB)


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of a (Q, m) score matrix, best first: (scores float32, column indices int64).
    Equal scores: lower column first, also across the k-th place. -inf scores and columns beyond m
    come back as -inf / -1."""
    nq, m = scores.shape
    vals = np.full((nq, k), -np.inf, np.float32)
    cols = np.full((nq, k), -1, np.int64)
    k_eff = min(k, m)
    if k_eff == 0 or nq == 0:
        return vals, cols
    if k_eff < m:
        kth = np.partition(scores, m - k_eff, axis=1)[:, m - k_eff]
        row, col = np.nonzero(scores >= kth[:, None])  # every item at least as good as the k-th (ties too)
    else:
        row, col = np.divmod(np.arange(nq * m), m)
    val = scores[row, col]
    order = np.lexsort((col, -val, row))
    row, col, val = row[order], col[order], val[order]
    pos = np.arange(len(row)) - np.searchsorted(row, row)  # place within the row
    keep = (pos < k_eff) & (val > -np.inf)
    vals[row[keep], pos[keep]] = val[keep]
    cols[row[keep], pos[keep]] = col[keep]
    return vals, cols


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest of a 1-D array of scores, best first (:func:`topk` of one row)."""
    cols = topk(np.asarray(scores)[None, :], max(k, 0))[1][0]
    return cols[cols >= 0]


def merge_topk(scores: list[np.ndarray], rows: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k of several (scores, rows) candidate lists per query row (equal scores: the earlier list
    first)."""
    s = np.concatenate(scores, axis=1) if len(scores) > 1 else scores[0]
    r = np.concatenate(rows, axis=1) if len(rows) > 1 else rows[0]
    vals, cols = topk(s, k)
    return vals, np.where(cols >= 0, np.take_along_axis(r, np.maximum(cols, 0), axis=1), -1)


def exact_search(queries: np.ndarray, vectors: np.ndarray, k: int, *, alive: np.ndarray | None = None,
                 exclude: np.ndarray | None = None, extra: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product of each query with the rows of ``vectors``: (scores, row
    indices), padded with -inf / -1.

    ``alive``: rows where it is False are skipped. ``exclude``: a (Q,) or (Q, E) array of rows each
    query must not get back (-1: none). ``extra`` = (query extras (Q, C), row extras (N, C)) adds
    their inner product to the score (colour fusion: the query's extras carry the weight). Scores
    are BLAS matrix products over tiles of at most SCORE_BUDGET floats, each tile's top-k merged."""
    nq, n = len(queries), len(vectors)
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_r = np.full((nq, k), -1, np.int64)
    if n == 0 or nq == 0:
        return out_s, out_r
    if exclude is not None:
        exclude = np.asarray(exclude, np.int64).reshape(nq, -1)
    qb = min(nq, 1024)
    vb = max(k, SCORE_BUDGET // qb)
    for q0 in range(0, nq, qb):
        q = queries[q0:q0 + qb]
        best_s = best_r = None
        for v0 in range(0, n, vb):
            s = q @ vectors[v0:v0 + vb].T
            if extra is not None:
                s += extra[0][q0:q0 + qb] @ extra[1][v0:v0 + vb].T
            if alive is not None:
                s[:, ~alive[v0:v0 + vb]] = -np.inf
            if exclude is not None:
                ex = exclude[q0:q0 + qb] - v0
                qi, ei = np.nonzero((ex >= 0) & (ex < s.shape[1]))
                s[qi, ex[qi, ei]] = -np.inf
            ts, tc = topk(s, k)
            tr = np.where(tc >= 0, tc + v0, -1)
            best_s, best_r = (ts, tr) if best_s is None else merge_topk([best_s, ts], [best_r, tr], k)
        out_s[q0:q0 + qb], out_r[q0:q0 + qb] = best_s, best_r
    return out_s, out_r

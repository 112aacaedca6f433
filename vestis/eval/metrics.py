"""Retrieval and classification metrics, vectorised over queries.

Retrieval metrics take a relevance matrix ``rel`` (Q x L, bool or 0/1): row q holds the ranked
results of query q, best first, ``rel[q, i]`` saying whether the result at rank i+1 is relevant.
``n_relevant`` (Q,) is R, the number of relevant items in the whole gallery for each query (the
query itself never counts). A ranking shorter than K (a gallery smaller than K, or an ANN index
that returned fewer results) counts the missing ranks as non-relevant.

Ties: rankings are built by ``vestis.eval.protocols.rank``, which orders by score descending and
breaks equal scores by the lower gallery index (a stable sort), so every metric is deterministic.

Queries with R = 0 have no defined AP, NDCG or hit rate: those functions return NaN for them, and
``retrieval_metrics`` leaves them out of every mean (or, on request, counts them as 0) and reports
how many there were.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix
from sklearn.metrics import recall_score

from vestis.errors import VestisError


def _relevance(rel: np.ndarray, k: int | None = None) -> np.ndarray:
    """``rel`` as a 2-D bool array, cut to K columns and zero-padded when shorter than K."""
    rel = np.asarray(rel).astype(bool, copy=False)
    if rel.ndim != 2:
        raise VestisError(f"a relevance matrix must be 2-D (queries x ranks), got shape {rel.shape}")
    if k is None:
        return rel
    if k < 1:
        raise VestisError(f"K must be at least 1, got {k}")
    if rel.shape[1] >= k:
        return rel[:, :k]
    return np.pad(rel, ((0, 0), (0, k - rel.shape[1])))


def _n_relevant(n_relevant: np.ndarray, rel: np.ndarray) -> np.ndarray:
    n = np.asarray(n_relevant, dtype=np.int64)
    if n.shape != (rel.shape[0],):
        raise VestisError(f"n_relevant must hold one count per query ({rel.shape[0]}), got shape {n.shape}")
    if np.any(rel.sum(axis=1) > n):
        raise VestisError("a ranking holds more relevant results than n_relevant allows; "
                          "is the query counted as its own result, or n_relevant taken from another gallery?")
    return n


def _precision_sum(rel: np.ndarray) -> np.ndarray:
    """sum_i P@i * rel_i over the given ranks, per query."""
    ranks = np.arange(1, rel.shape[1] + 1)
    return (np.cumsum(rel, axis=1) / ranks * rel).sum(axis=1)


def _divide_or_nan(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """P@K = (1/K) * sum_{i<=K} rel_i, per query.

    Always divided by K, also when fewer than K results exist (missing ranks are misses), so a
    method cannot look better by returning fewer results. This is what the ArcFace
    fashion-retrieval project reports as "mAP@K"."""
    return _relevance(rel, k).sum(axis=1) / k


def recall_at_k(rel: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """R@K = 1 if any of the top K results is relevant else 0 (hit rate, the DeepFashion In-shop
    "top-K retrieval accuracy"); NaN for queries with R = 0."""
    relk = _relevance(rel, k)
    n = _n_relevant(n_relevant, _relevance(rel))
    return np.where(n > 0, relk.any(axis=1).astype(float), np.nan)


def average_precision_at_k(rel: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@K = (1/min(K, R)) * sum_{i<=K} P@i * rel_i, per query; NaN for queries with R = 0.

    Normalising by min(K, R) makes a perfect top K score 1 even when R > K."""
    relk = _relevance(rel, k)
    n = _n_relevant(n_relevant, _relevance(rel))
    return _divide_or_nan(_precision_sum(relk), np.minimum(n, k))


def map_at_k(rel: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """mAP@K: the mean of AP@K over queries with R > 0 (NaN when there are none)."""
    ap = average_precision_at_k(rel, n_relevant, k)
    return float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")


def ndcg_at_k(rel: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """NDCG@K = DCG@K / IDCG@K with binary gains and a log2 discount, per query:
    DCG@K = sum_{i<=K} rel_i / log2(i + 1), IDCG@K = sum_{i<=min(K, R)} 1 / log2(i + 1).
    NaN for queries with R = 0."""
    relk = _relevance(rel, k)
    n = _n_relevant(n_relevant, _relevance(rel))
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n, k)]
    return _divide_or_nan(relk @ discount, ideal)


def average_precision(rel: np.ndarray, n_relevant: np.ndarray | None = None) -> np.ndarray:
    """AP over a full ranking = (1/R) * sum_i P@i * rel_i, per query; NaN for R = 0.

    R defaults to the relevant results present in the ranking (right when the ranking covers the
    whole gallery). Equals ``sklearn.metrics.average_precision_score`` for a ranking of the full
    gallery by a score without ties (sklearn groups tied scores; here ties are broken by index)."""
    rel = _relevance(rel)
    n = rel.sum(axis=1) if n_relevant is None else _n_relevant(n_relevant, rel)
    return _divide_or_nan(_precision_sum(rel), n)


def retrieval_metrics(rel: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int], *,
                      include_queries_without_relevant: bool = False) -> dict[str, float | int]:
    """mAP@K, P@K, R@K and NDCG@K for each K, averaged over queries.

    By default queries with R = 0 (the only item of their group) are left out of every mean, P@K
    included, so all numbers describe the same queries, ones that can succeed. With
    ``include_queries_without_relevant`` they count as 0 in every mean instead: the convention of
    projects that average over all queries (such as the ArcFace fashion-retrieval project); P@K and
    R@K then equal the default ones times n_queries / (n_queries + n_queries_without_relevant).
    ``n_queries`` counts the queries averaged, ``n_queries_without_relevant`` those with R = 0."""
    rel = _relevance(rel)
    n = _n_relevant(n_relevant, rel)
    without = n == 0
    if not include_queries_without_relevant:
        rel, n = rel[~without], n[~without]
    out: dict[str, float | int] = {}
    per_query = {"mAP": lambda k: average_precision_at_k(rel, n, k), "P": lambda k: precision_at_k(rel, k),
                 "R": lambda k: recall_at_k(rel, n, k), "NDCG": lambda k: ndcg_at_k(rel, n, k)}
    for name, fn in per_query.items():
        for k in sorted(set(ks)):
            out[f"{name}@{k}"] = float(np.nan_to_num(fn(k)).mean()) if len(n) else float("nan")
    out["n_queries"] = len(n)
    out["n_queries_without_relevant"] = int(without.sum())
    return out


def change_interval(model: np.ndarray, baseline: np.ndarray, *, confidence: float = 0.95,
                    resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The confidence interval of the relative change of a mean per-query score, ``model`` against
    ``baseline`` on the same queries (mean(model) / mean(baseline) - 1): a paired percentile
    bootstrap over the queries (``scipy.stats.bootstrap``, seeded). It tells a change a model made
    from the sampling noise of the query set that measured it: on a few thousand queries a change of
    a fraction of a percent can go either way. (NaN, NaN) with fewer than two queries or a zero
    baseline."""
    model, baseline = np.asarray(model, np.float64), np.asarray(baseline, np.float64)
    if model.shape != baseline.shape or model.ndim != 1:
        raise VestisError(f"paired per-query scores need two 1-d arrays of one length, got {model.shape} "
                          f"and {baseline.shape}")
    if len(model) < 2 or not baseline.mean():
        return float("nan"), float("nan")
    if np.array_equal(model, baseline):  # every resample gives 0: no interval to estimate
        return 0.0, 0.0

    def change(m: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        return m.mean(axis=axis) / b.mean(axis=axis) - 1

    result = stats.bootstrap((model, baseline), change, paired=True, vectorized=True, n_resamples=resamples,
                             confidence_level=confidence, method="percentile", batch=200, rng=seed)
    low, high = result.confidence_interval
    return float(low), float(high)


def ann_recall_at_k(approx_indices: np.ndarray, exact_indices: np.ndarray, k: int) -> float:
    """Recall of an approximate index against exact search: the mean over queries of
    |approx top K ∩ exact top K| / |exact top K| (padding ids -1 ignored)."""
    approx, exact = np.asarray(approx_indices)[:, :k], np.asarray(exact_indices)[:, :k]
    found = (approx[:, :, None] == exact[:, None, :]) & (exact[:, None, :] >= 0)
    n_exact = (exact >= 0).sum(axis=1)
    return float(np.mean(found.any(axis=1).sum(axis=1) / np.maximum(n_exact, 1)))


def accuracy_top_k(scores: np.ndarray, y_true: np.ndarray, k: int = 1) -> float:
    """Top-K accuracy of class scores or logits (Q x C) against class indices ``y_true`` (Q,).

    A query is correct when its true class ranks among the K best; equal scores rank the lower
    class index first (the same tie rule as retrieval), so ties never make a model look better."""
    scores = np.asarray(scores)
    y = np.asarray(y_true, dtype=np.int64)
    if scores.ndim != 2 or y.shape != (scores.shape[0],):
        raise VestisError(f"scores must be Q x C and y_true hold Q class indices, got shapes {scores.shape} "
                          f"and {y.shape}")
    if np.any((y < 0) | (y >= scores.shape[1])):
        raise VestisError(f"y_true holds class indices outside 0..{scores.shape[1] - 1}")
    true_score = scores[np.arange(len(y)), y][:, None]
    before = (scores > true_score) | ((scores == true_score) & (np.arange(scores.shape[1]) < y[:, None]))
    return float(np.mean(before.sum(axis=1) < k))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence | None = None
                     ) -> tuple[np.ndarray, list]:
    """Counts C[i, j] of items of class labels[i] predicted as labels[j] (sklearn), with the
    labels used (default: the sorted union of true and predicted labels)."""
    if labels is None:
        labels = np.unique(np.concatenate([np.asarray(y_true), np.asarray(y_pred)])).tolist()
    return _sk_confusion_matrix(y_true, y_pred, labels=labels), list(labels)


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence | None = None
                       ) -> dict[str, float]:
    """For each class (default: those present in ``y_true``), the fraction of its items predicted
    correctly, i.e. per-class recall (sklearn); keys are the class labels as strings."""
    if labels is None:
        labels = np.unique(np.asarray(y_true)).tolist()
    acc = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    return {str(label): float(a) for label, a in zip(labels, acc)}


def knn_classify(neighbour_labels: np.ndarray, neighbour_scores: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Majority vote of each query's K neighbour labels (Q x K, best first).

    A tie in votes goes to the label whose neighbours have the higher summed similarity, and a
    remaining tie to the label of the nearer neighbour. Works on any label dtype; processed in
    chunks of queries because it compares each neighbour with every other (Q x K x K)."""
    labels = np.asarray(neighbour_labels)
    scores = np.asarray(neighbour_scores, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != scores.shape or labels.shape[1] == 0:
        raise VestisError(f"neighbour labels and scores must both be Q x K (K >= 1), got {labels.shape} "
                          f"and {scores.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(labels.shape)
    choice = np.empty(len(codes), dtype=np.int64)
    for start in range(0, len(codes), chunk):
        c, s = codes[start:start + chunk], scores[start:start + chunk]
        same = c[:, :, None] == c[:, None, :]
        votes, sims = same.sum(axis=2), (same * s[:, None, :]).sum(axis=2)
        best_votes = votes == votes.max(axis=1, keepdims=True)
        choice[start:start + chunk] = np.argmax(np.where(best_votes, sims, -np.inf), axis=1)
    return labels[np.arange(len(labels)), choice]

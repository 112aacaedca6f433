"""Evaluation protocols: who queries, what is searched, what counts as relevant.

Everything here works on NumPy arrays (L2-normalised vectors, label arrays); loading them from a
collection is the caller's job. Scores are inner products (cosine similarity for unit vectors).

- ``leave_one_out``: every labelled item queries all the others; it never counts as its own result
  (``per_query_ap``: the per-query AP@K of any ranking, for intervals over the queries).
- ``query_gallery``: separate query and gallery sets (DeepFashion In-shop style).
- ``attribute_map``: attribute-specific MAP (ASEN / RPF protocol), AP over the full ranking.
- ``knn_accuracy`` / ``knn_from_ranking``: classification by the majority label of the K nearest
  gallery items.
- ``split_by_id`` / ``save_split`` / ``load_split``: a seeded, stratified train/val/test split kept
  in a CSV file so training and evaluation use the same one.

Exact search is ``rank`` (the checked entry to :func:`vestis.index.topk.exact_search`). To score any other index (FAISS, Annoy, ...), search it yourself and pass
its result as ``ranking``: a Q x L int array of gallery positions, best first, -1 where it returned
nothing; for leave-one-out ask it for max(ks) + 1 results, since the query itself may come back.
"""

from __future__ import annotations

import csv
import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.index.topk import exact_search
from vestis.eval.metrics import (
    average_precision,
    average_precision_at_k,
    confusion_matrix,
    knn_classify,
    per_class_accuracy,
    retrieval_metrics,
)

SPLITS = ("train", "val", "test")


def _as_vectors(vectors: np.ndarray, name: str) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise VestisError(f"{name} must be a 2-D array (items x dim), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise VestisError(f"{name} contain NaN or infinite values; re-encode the affected images")
    return v


def rank(query_vecs: np.ndarray, gallery_vecs: np.ndarray, k: int, *,
         exclude_self: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-K gallery items by inner product for each query, the inputs checked: (scores
    float32 Q x K, indices int64 Q x K), best first, padded with -inf / -1 when fewer than K
    candidates exist; equal scores rank the lower gallery index first (the one kernel,
    :func:`vestis.index.topk.exact_search`). ``exclude_self[i]`` is the gallery index of query i
    (leave-one-out) or -1: that item is never returned for query i."""
    q, g = _as_vectors(query_vecs, "query vectors"), _as_vectors(gallery_vecs, "gallery vectors")
    if q.shape[1] != g.shape[1]:
        raise VestisError(f"query vectors have dimension {q.shape[1]} but gallery vectors {g.shape[1]}")
    if k < 1:
        raise VestisError(f"K must be at least 1, got {k}")
    if exclude_self is not None:
        exclude_self = np.asarray(exclude_self, np.int64)
        if exclude_self.shape != (len(q),) or np.any((exclude_self < -1) | (exclude_self >= len(g))):
            raise VestisError("exclude_self must hold one gallery index (or -1) per query")
    return exact_search(q, g, k, exclude=exclude_self)


def _encode(*label_arrays: np.ndarray) -> list[np.ndarray]:
    """Integer codes shared across the arrays; missing labels (None, NaN, "") become -1."""
    arrays = [np.asarray(a, dtype=object) for a in label_arrays]
    present = [np.array([not _is_missing(x) for x in a], dtype=bool) for a in arrays]
    values = np.concatenate([a[p] for a, p in zip(arrays, present)])
    uniq = list(dict.fromkeys(values.tolist()))
    lookup = {v: i for i, v in enumerate(uniq)}
    return [np.array([lookup[x] if p else -1 for x, p in zip(a, pr)], dtype=np.int64)
            for a, pr in zip(arrays, present)]


def _is_missing(value: Any) -> bool:
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or (isinstance(value, str) and not value.strip()))


def relevance(ranking: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, *,
              exclude_self: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relevance matrix of a ranking: (rel Q x L bool, n_relevant Q, labelled Q bool).

    ``ranking`` holds gallery positions, best first, -1 for no result. A result is relevant when
    its label equals the query's; items with a missing label are never relevant, and queries with a
    missing label are marked ``labelled = False``. With ``exclude_self`` (the gallery position of
    each query, or -1), that item is removed from the ranking (later results move up) and is not
    counted in n_relevant, so any index's output can be scored leave-one-out."""
    ranking = np.asarray(ranking, dtype=np.int64)
    qcode, gcode = _encode(query_labels, gallery_labels)
    if ranking.ndim != 2 or len(ranking) != len(qcode):
        raise VestisError(f"the ranking must have one row per query ({len(qcode)}), "
                          f"got shape {ranking.shape}")
    if np.any((ranking < -1) | (ranking >= len(gcode))):
        raise VestisError("the ranking holds positions outside the gallery (valid: 0..N-1, or -1 for none)")
    n_codes = max(qcode.max(initial=-1), gcode.max(initial=-1)) + 1
    n_relevant = np.bincount(gcode[gcode >= 0], minlength=n_codes)
    n_relevant = np.where(qcode >= 0, n_relevant[np.maximum(qcode, 0)], 0)
    if exclude_self is not None:
        excl = np.asarray(exclude_self, dtype=np.int64)
        if excl.shape != (len(qcode),) or np.any((excl < -1) | (excl >= len(gcode))):
            raise VestisError("exclude_self must hold one gallery position (or -1) per query")
        own = (ranking == excl[:, None]) & (excl[:, None] >= 0)
        ranking = np.take_along_axis(ranking, np.argsort(own, axis=1, kind="stable"), axis=1)
        ranking[np.sort(own, axis=1)] = -1
        n_relevant = n_relevant - ((excl >= 0) & (qcode >= 0) & (gcode[excl] == qcode))
    rel = (ranking >= 0) & (gcode[ranking] == qcode[:, None]) & (qcode[:, None] >= 0)
    return rel, n_relevant, qcode >= 0


def score_ranking(ranking: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                  ks: Sequence[int], *, exclude_self: np.ndarray | None = None,
                  include_queries_without_relevant: bool = False) -> dict[str, float | int]:
    """Retrieval metrics of any ranking, exact or from an ANN index, over the labelled queries
    (``n_queries_without_label`` counts the others). Queries with no relevant item are left out of
    the means unless ``include_queries_without_relevant`` (see
    ``vestis.eval.metrics.retrieval_metrics``)."""
    ks = sorted(set(ks))
    ranking = np.asarray(ranking, dtype=np.int64)
    rel, n_relevant, labelled = relevance(ranking, query_labels, gallery_labels, exclude_self=exclude_self)
    # rows that returned the query itself have one result fewer to score
    length = np.full(len(ranking), ranking.shape[1])
    if exclude_self is not None:
        excl = np.asarray(exclude_self)[:, None]
        length -= ((ranking == excl) & (excl >= 0)).any(axis=1)
    needed = min(ks[-1], len(gallery_labels) - (exclude_self is not None))
    if len(length) and length.min() < needed:
        raise VestisError(f"the ranking has {length.min()} results for some query (the query itself removed) "
                          f"but K = {ks[-1]} needs {needed}; search with K = {ks[-1] + 1} or more")
    out = retrieval_metrics(rel[labelled], n_relevant[labelled], ks,
                            include_queries_without_relevant=include_queries_without_relevant)
    out["n_queries_without_label"] = int((~labelled).sum())
    return out


def leave_one_out(vectors: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 10, 50), *,
                  ranking: np.ndarray | None = None,
                  include_queries_without_relevant: bool = False) -> dict[str, float | int]:
    """Every labelled item queries all other items; relevant = the same label (group key).

    The query is never its own result, and is not counted among its relevant items. Items whose
    label is missing are not queries but stay in the gallery as non-relevant results. Without
    ``ranking`` the search is exact (``rank``); with it, ``ranking`` is an N x L array from any
    index over the same vectors, L >= max(ks) + 1 (it may contain the query itself). Items alone in
    their group are left out of the means unless ``include_queries_without_relevant``."""
    labels = np.asarray(labels, dtype=object)
    if ranking is None:
        ranking = leave_one_out_ranking(vectors, labels, max(ks))
    elif len(labels) != len(vectors):
        raise VestisError(f"{len(vectors)} vectors but {len(labels)} labels")
    return score_ranking(ranking, labels, labels, ks, exclude_self=np.arange(len(labels)),
                         include_queries_without_relevant=include_queries_without_relevant)


def leave_one_out_ranking(vectors: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The exact leave-one-out ranking: each labelled item's ``k`` nearest other items (N x k
    positions; rows of unlabelled items are -1), for :func:`leave_one_out` and
    :func:`per_query_ap`."""
    labels = np.asarray(labels, dtype=object)
    if len(labels) != len(vectors):
        raise VestisError(f"{len(vectors)} vectors but {len(labels)} labels")
    (query_rows,) = np.nonzero(_encode(labels)[0] >= 0)
    ranking = np.full((len(labels), k), -1, np.int64)
    vectors = _as_vectors(vectors, "vectors")
    ranking[query_rows] = rank(vectors[query_rows], vectors, k, exclude_self=query_rows)[1]
    return ranking


def per_query_ap(ranking: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k: int, *,
                 exclude_self: np.ndarray | None = None) -> np.ndarray:
    """AP@k of each query that :func:`score_ranking` averages (labelled, with a relevant item), in
    query order: the per-query scores behind its mAP@k, for intervals over the queries
    (:func:`vestis.eval.metrics.change_interval`). For a leave-one-out ranking pass the labels as
    both and ``exclude_self=np.arange(N)``."""
    rel, n_relevant, labelled = relevance(ranking, np.asarray(query_labels, dtype=object),
                                          np.asarray(gallery_labels, dtype=object), exclude_self=exclude_self)
    queries = labelled & (n_relevant > 0)
    return average_precision_at_k(rel[queries], n_relevant[queries], k)


def query_gallery(query_vecs: np.ndarray, query_labels: np.ndarray, gallery_vecs: np.ndarray,
                  gallery_labels: np.ndarray, ks: Sequence[int] = (1, 10, 20, 50), *,
                  ranking: np.ndarray | None = None,
                  include_queries_without_relevant: bool = False) -> dict[str, float | int]:
    """Queries search a separate gallery (DeepFashion In-shop style: R@1/10/20/50); relevant = the
    same label. ``ranking`` (Q x L gallery positions, L >= max(ks)) replaces exact search."""
    if len(query_labels) != len(query_vecs) or len(gallery_labels) != len(gallery_vecs):
        raise VestisError("each query and gallery vector needs exactly one label")
    if ranking is None:
        ranking = rank(query_vecs, gallery_vecs, max(ks))[1]
    return score_ranking(ranking, query_labels, gallery_labels, ks,
                         include_queries_without_relevant=include_queries_without_relevant)


def group_labels(metadata: Sequence[Mapping[str, Any]], columns: Sequence[str], sep: str = "|") -> np.ndarray:
    """One group key per item, the values of ``columns`` joined by ``sep`` ("Shirts|Navy Blue").

    An item missing any of the columns (absent, None, NaN or empty) gets None: it is not used as a
    query, but stays in the gallery, where it is never relevant."""
    if not columns:
        raise VestisError("name at least one label column to group by")
    keys = np.empty(len(metadata), dtype=object)
    for i, meta in enumerate(metadata):
        values = [meta.get(c) for c in columns]
        keys[i] = None if any(_is_missing(v) for v in values) else sep.join(str(v).strip() for v in values)
    return keys


def _full_ranking_ap(vectors: np.ndarray, codes: np.ndarray, batch_size: int) -> np.ndarray:
    """AP of each item querying all the others over the full ranking (ties: lower index first)."""
    n_relevant = np.bincount(codes)[codes] - 1
    ap = np.empty(len(codes))
    for start in range(0, len(codes), batch_size):
        stop = min(start + batch_size, len(codes))
        s = vectors[start:stop] @ vectors.T
        s[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # the query itself goes last
        order = np.argsort(-s, axis=1, kind="stable")[:, :-1]
        ap[start:stop] = average_precision(codes[order] == codes[start:stop, None], n_relevant[start:stop])
    return ap


def attribute_map(vectors: np.ndarray | Mapping[str, np.ndarray], metadata: Sequence[Mapping[str, Any]],
                  attributes: Sequence[str], *, batch_size: int = 256) -> dict[str, Any]:
    """Attribute-specific MAP (ASEN / RPF protocol).

    For attribute a, each item with a label for a queries all OTHER items with a label for a; a
    candidate is relevant when its value equals the query's; AP is taken over the full ranking.
    ``vectors`` is one N x D matrix, or a mapping attribute -> N x D matrix for models that embed
    each attribute in its own space. Returns the overall MAP (the mean AP over all queries of all
    attributes, i.e. attribute MAPs weighted by their query counts), and per attribute its MAP,
    query counts and MAP per value. Queries whose value no other item shares have no AP and are
    counted in ``n_queries_without_relevant``. Top-level keys are prefixed ``attribute_`` so the
    result merges with ``leave_one_out``'s into one report."""
    per_attribute: dict[str, Any] = {}
    all_ap = []
    for attr in attributes:
        if isinstance(vectors, Mapping) and attr not in vectors:
            raise VestisError(f"no embedding given for attribute {attr!r}")
        matrix = vectors[attr] if isinstance(vectors, Mapping) else vectors
        if len(matrix) != len(metadata):
            raise VestisError(f"{len(matrix)} vectors for attribute {attr!r} "
                              f"but {len(metadata)} metadata rows")
        values = np.array([None if _is_missing(m.get(attr)) else str(m.get(attr)).strip() for m in metadata],
                          dtype=object)
        rows = np.flatnonzero([v is not None for v in values])
        if len(rows) == 0:
            raise VestisError(f"no item has a label for attribute {attr!r}")
        names, codes = np.unique(values[rows].astype(str), return_inverse=True)
        ap = _full_ranking_ap(_as_vectors(matrix, f"vectors for {attr!r}")[rows], codes, batch_size)
        scored = ~np.isnan(ap)
        all_ap.append(ap[scored])
        per_attribute[attr] = {
            "mAP": float(ap[scored].mean()) if scored.any() else float("nan"),
            "n_queries": int(scored.sum()),
            "n_queries_without_relevant": int((~scored).sum()),
            "n_candidates": len(rows),
            "values": {str(name): {"mAP": float(np.nanmean(ap[codes == i])) if scored[codes == i].any()
                                   else float("nan"), "n_queries": int(scored[codes == i].sum())}
                       for i, name in enumerate(names)},
        }
    pooled = np.concatenate(all_ap) if all_ap else np.empty(0)
    return {"attribute_mAP": float(pooled.mean()) if len(pooled) else float("nan"),
            "attribute_n_queries": len(pooled),
            "attribute_n_queries_without_relevant": sum(a["n_queries_without_relevant"]
                                                        for a in per_attribute.values()),
            "attributes": per_attribute}


def knn_accuracy(query_vecs: np.ndarray, query_labels: np.ndarray, gallery_vecs: np.ndarray,
                 gallery_labels: np.ndarray, k: int = 10) -> dict[str, Any]:
    """kNN classification (Fashion-MNIST style): each query takes the majority label of its K
    nearest gallery items by exact search (:func:`knn_from_ranking`)."""
    if len(query_labels) != len(query_vecs) or len(gallery_labels) != len(gallery_vecs):
        raise VestisError("each query and gallery vector needs exactly one label")
    if not 1 <= k <= len(gallery_labels):
        raise VestisError(f"K must be between 1 and the gallery size ({len(gallery_labels)}), got {k}")
    scores, indices = rank(query_vecs, gallery_vecs, k)
    return knn_from_ranking(query_labels, gallery_labels, scores, indices)


def knn_from_ranking(query_labels: np.ndarray, gallery_labels: np.ndarray, scores: np.ndarray,
                     indices: np.ndarray) -> dict[str, Any]:
    """kNN classification from any ranking (Q x K scores and gallery positions, best first): each
    query takes the majority label of its K neighbours (ties: higher summed similarity, then the
    nearer neighbour). Returns the accuracy, per-class accuracy and the confusion matrix (labels as
    strings)."""
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if indices.shape[0] != len(query_labels) or (indices < 0).any():
        raise VestisError(f"kNN needs {indices.shape[1]} neighbours for each of the {len(query_labels)} queries; "
                          "the gallery is smaller: lower K")
    predicted = knn_classify(gallery_labels[indices], scores)
    matrix, labels = confusion_matrix(query_labels, predicted)
    return {"kNN_accuracy": float(np.mean(predicted == query_labels)), "kNN_k": indices.shape[1],
            "kNN_n_queries": len(query_labels),
            "per_class_accuracy": per_class_accuracy(query_labels, predicted),
            "confusion_matrix": {"labels": [str(x) for x in labels], "matrix": matrix.tolist()}}


def split_by_id(ids: Sequence[str], groups: Sequence[Any],
                fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, str]:
    """A deterministic train/val/test split of item ids, stratified by group.

    Rule: each group's items are shuffled (seeded by ``seed`` and the group key) and each split
    gets floor(n * fraction) of them; the left-over items go to the splits furthest below their
    share so far (groups visited in a seeded order), so every group of n items puts floor or ceil
    of n * fraction in each split and the overall fractions hold. Groups with a single item go to
    train: alone they can never be a query with a relevant answer. Items with a missing group
    (None) form one group of their own. The same ids, groups, fractions and seed give the same
    split on any machine."""
    ids = [str(i) for i in ids]
    if len(ids) != len(groups):
        raise VestisError(f"{len(ids)} ids but {len(groups)} group labels")
    if len(set(ids)) != len(ids):
        raise VestisError("item ids must be unique to split by id")
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or np.any(frac < 0) or not math.isclose(frac.sum(), 1.0):
        raise VestisError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    members: dict[str, list[str]] = {}
    for item, group in zip(ids, groups):
        members.setdefault("" if _is_missing(group) else str(group), []).append(item)
    order = sorted(members)
    order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    assigned, expected = np.zeros(3), np.zeros(3)
    split: dict[str, str] = {}
    for key in order:
        items = sorted(members[key])
        if len(items) == 1:
            split[items[0]] = "train"
            continue
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        items = [items[i] for i in rng.permutation(len(items))]
        share = len(items) * frac
        counts = np.floor(share + 1e-9).astype(int)
        # only splits whose share has a fractional part may take a left-over item (keeps floor/ceil)
        deficit = np.where(share - counts > 1e-9, expected + share - assigned - counts, -np.inf)
        extra = np.argsort(-deficit, kind="stable")[:len(items) - counts.sum()]
        counts[extra] += 1
        expected += share
        assigned += counts
        for name, chunk in zip(SPLITS, np.split(np.array(items, dtype=object), np.cumsum(counts)[:2])):
            split.update(dict.fromkeys(chunk.tolist(), name))
    return {i: split[i] for i in ids}


def save_split(path: str | Path, mapping: Mapping[str, str]) -> None:
    """Write a split as CSV with columns ``id,split``."""
    bad = {s for s in mapping.values() if s not in SPLITS}
    if bad:
        raise VestisError(f"unknown split names {sorted(bad)}; use {', '.join(SPLITS)}")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split"])
        writer.writerows(mapping.items())


def load_split(path: str | Path) -> dict[str, str]:
    """Read a split written by ``save_split``: id -> "train" / "val" / "test"."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise VestisError(f"cannot read split file {path}: {e.strerror or e}") from e
    if rows and not {"id", "split"} <= set(rows[0]):
        raise VestisError(f"{path} is not a split file: it needs the columns id,split")
    bad = {r["split"] for r in rows if r["split"] not in SPLITS}
    if bad:
        raise VestisError(f"{path} has unknown split names {sorted(bad)}; expected {', '.join(SPLITS)}")
    return {r["id"]: r["split"] for r in rows}

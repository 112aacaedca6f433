"""The one searcher core: the nearest items of a vector table for a batch of queries, with a filter,
items to leave out and colour fusion, through an ANN index or by an exact scan.

The local collection ranks its image vectors with it (``search_vectors`` and ``search_batch``,
hence every image search and ``vestis eval``), the text searcher its joint vectors, and a Milvus
collection its exact evaluation. The rules:

* without an ANN index, or with a filter keeping less than ``MIN_ANN_FILTER_SHARE`` of the items,
  the allowed rows are scored exactly (:func:`vestis.index.topk.exact_search`: gathered when they
  are under ``GATHER_SHARE`` of the table, else every row scored and the others masked);
* otherwise the index is asked for ``want`` plus the left-out items (``ANN_RERANK_FACTOR`` times
  that, at least ``MIN_COLOUR_FETCH``, when fusing colour; ``FILTER_OVERFETCH`` divided by the
  filter's share more when filtered); candidates outside the filter or left out are dropped, a
  query left with too few is scanned exactly, and with colour the candidates are re-scored exactly
  from the table with the colour term.

Scores are ``cos(deep) + colour_weight * sim(colour)``; the colour descriptors are the table's
extra columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vestis.index.base import VectorIndex
from vestis.index.topk import SCORE_BUDGET, exact_search, topk
from vestis.index.vectors import VectorStore

ANN_RERANK_FACTOR = 10  # ANN candidates fetched per wanted result when fusing colour
MIN_COLOUR_FETCH = 200
# A filter that keeps this share of the items or more is searched through the ANN index (its rows
# gathered for an exact scan would cost more than the index); FILTER_OVERFETCH x the candidates the
# share needs are fetched, so that enough of them pass.
MIN_ANN_FILTER_SHARE, FILTER_OVERFETCH = 0.1, 2.0
GATHER_SHARE = 0.25  # an exact scan gathers the allowed rows below this share, else masks the others

Ranked = tuple[np.ndarray, np.ndarray, np.ndarray]  # vids (Q, want), scores (Q, want), eligible (Q,)


def excluded(exclude: Sequence[Sequence[int]], n_queries: int) -> np.ndarray:
    """Per-query vids to leave out as a (Q, E) array padded with -1 (each vid once)."""
    lists = [list(dict.fromkeys(int(v) for v in e)) for e in exclude] or [[]] * n_queries
    out = np.full((n_queries, max(map(len, lists), default=0)), -1, np.int64)
    for i, e in enumerate(lists):
        out[i, :len(e)] = e
    return out


def nearest(table: VectorStore, queries: np.ndarray, want: int, *, ann: VectorIndex | None = None,
            allowed: np.ndarray | None = None, exclude: Sequence[Sequence[int]] = (),
            colours: np.ndarray | None = None, colour_weight: float = 0.0) -> Ranked:
    """The ``want`` best vids and scores of each query (rows padded with -1 / -inf) and how many
    items each could get (the ``allowed`` vids only when given, less its ``exclude`` vids): see the
    module docstring for the rules."""
    queries = np.ascontiguousarray(queries, np.float32)
    ex = excluded(exclude, len(queries))
    ex_rows = table.rows_of(ex.ravel()).reshape(ex.shape)
    pool = member = None  # the allowed rows, and whether each table row is one
    if allowed is not None:
        pool = table.rows_of(np.unique(allowed))
        pool = pool[pool >= 0]
        member = np.zeros(table.n_rows, bool)
        member[pool] = True
        ex_rows = np.where(member[np.maximum(ex_rows, 0)], ex_rows, -1)
    eligible = (len(table) if pool is None else len(pool)) - (ex_rows >= 0).sum(axis=1)
    if pool is not None and len(pool) == 0:  # the filter keeps nothing
        return (np.full((len(queries), want), -1, np.int64), np.full((len(queries), want), -np.inf, np.float32),
                np.zeros(len(queries), np.int64))
    share = len(pool) / max(1, len(table)) if pool is not None else 1.0
    if ann is None or share < MIN_ANN_FILTER_SHARE:
        return (*_scan(table, queries, want, pool, ex_rows, colours, colour_weight), eligible)
    fetch = want + ex.shape[1]
    if colour_weight:
        fetch = max(fetch * ANN_RERANK_FACTOR, MIN_COLOUR_FETCH)
    if pool is not None:
        fetch = int(np.ceil(fetch * FILTER_OVERFETCH / share))
    scores, vids = ann.search(queries, max(1, min(fetch, len(ann))))
    keep = (vids >= 0) & ~(vids[:, :, None] == ex[:, None, :]).any(axis=2)
    rows = table.rows_of(vids.ravel()).reshape(vids.shape) if (colour_weight or member is not None) else None
    if member is not None:
        keep &= (rows >= 0) & member[np.maximum(rows, 0)]
    if colour_weight:  # re-scored exactly with the colour term, from the table
        scores = _with_colour(table, queries, rows, colours, colour_weight)
    top_s, cols = topk(np.where(keep, scores, -np.inf).astype(np.float32, copy=False), want)
    top_v = np.where(cols >= 0, np.take_along_axis(vids, np.maximum(cols, 0), axis=1), -1)
    if pool is not None:  # too few candidates passed the filter: those queries are scanned
        passed = keep.sum(axis=1)
        short = np.flatnonzero((passed < want) & (passed < eligible))
        if len(short):
            top_v[short], top_s[short] = _scan(table, queries[short], want, pool, ex_rows[short],
                                               None if colours is None else colours[short], colour_weight)
    return top_v, top_s, eligible


def _with_colour(table: VectorStore, queries: np.ndarray, rows: np.ndarray, colours: np.ndarray,
                 colour_weight: float) -> np.ndarray:
    """Exact fused scores of each query's candidate rows (-inf where the row is -1), the colour
    terms a few queries at a time so the gathered descriptors stay within SCORE_BUDGET floats."""
    out = table.inner_products(queries, rows)
    step = max(1, SCORE_BUDGET // max(1, rows.shape[1] * table.extra_dim))
    for q0 in range(0, len(queries), step):
        extra = table.extra[np.maximum(rows[q0:q0 + step], 0)]
        out[q0:q0 + step] += colour_weight * np.einsum("qcd,qd->qc", extra, colours[q0:q0 + step])
    return out


def _scan(table: VectorStore, queries: np.ndarray, want: int, pool: np.ndarray | None, ex_rows: np.ndarray,
          colours: np.ndarray | None, colour_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of the table's rows, or of the ``pool`` rows only: gathered when they are few
    (under GATHER_SHARE of the table), else every row scored and the others masked (no copy);
    ``ex_rows``: each query's excluded rows."""
    ids, vectors, extra = table.view
    alive = None
    if pool is not None and len(pool) < GATHER_SHARE * len(ids):
        place = np.full(table.n_rows, -1, np.int64)
        place[pool] = np.arange(len(pool))
        ex_rows = np.where(ex_rows >= 0, place[np.maximum(ex_rows, 0)], -1)
        ids, vectors, extra = ids[pool], table.take(pool), extra[pool]
    elif pool is not None:
        alive = np.zeros(len(ids), bool)
        alive[pool] = True
    fusion = (colour_weight * np.asarray(colours, np.float32), extra) if colour_weight else None
    scores, cols = exact_search(queries, vectors, want, alive=alive, exclude=ex_rows, extra=fusion)
    return np.where(cols >= 0, ids[np.maximum(cols, 0)], -1), scores

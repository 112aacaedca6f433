"""The searcher core (vestis.store.nearest): the same answers through an ANN index and an exact
scan, whatever the filter's share, the items left out and the colour term."""

from __future__ import annotations

import numpy as np
import pytest

from vestis.index import make_index
from vestis.index.vectors import VectorStore
from vestis.store import nearest as core
from vestis.store.nearest import nearest

N, DIM, COLOUR = 400, 16, 5


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def table() -> VectorStore:
    rng = np.random.default_rng(0)
    vids = rng.permutation(10 * N)[:N].astype(np.int64)  # vids in no order: rows and vids differ
    return VectorStore(DIM, unit(rng.normal(size=(N, DIM))), vids, extra_dim=COLOUR,
                       extra=unit(np.abs(rng.normal(size=(N, COLOUR)))))


def brute_force(table, queries, want, allowed=None, exclude=(), colours=None, weight=0.0):
    ids, vectors, extra = table.view
    out = []
    for q, query in enumerate(queries):
        scores = vectors @ query + (weight * (extra @ colours[q]) if weight else 0)
        keep = [r for r in range(len(ids)) if (allowed is None or ids[r] in allowed)
                and (not exclude or ids[r] not in exclude[q])]
        out.append([int(ids[r]) for r in sorted(keep, key=lambda r: (-scores[r], r))[:want]])
    return out


def rows_of(found):
    return [[int(v) for v in row if v >= 0] for row in found]


@pytest.mark.parametrize("share", [None, 0.05, 0.2, 0.6])  # no filter; gathered; masked (ANN's share rules)
def test_exact_scan_and_ann_index_answer_like_brute_force(table, share):
    rng = np.random.default_rng(1)
    queries = unit(rng.normal(size=(7, DIM)))
    colours = unit(np.abs(rng.normal(size=(7, COLOUR))))
    ids = table.ids
    allowed = None if share is None else np.sort(rng.choice(ids, int(share * N), replace=False))
    exclude = [tuple(rng.choice(ids, 2)) for _ in range(7)]
    exact = make_index("exact", DIM)  # an "ANN" index that is exact: both paths must agree with brute force
    exact.add(ids.copy(), table.vectors.copy())
    for weight in (0.0, 0.5):
        expected = brute_force(table, queries, 12, None if allowed is None else set(allowed.tolist()),
                               exclude, colours, weight)
        for ann in (None, exact):
            found, scores, eligible = nearest(table, queries, 12, ann=ann, allowed=allowed, exclude=exclude,
                                              colours=colours, colour_weight=weight)
            assert rows_of(found) == expected
            pool = ids if allowed is None else allowed
            assert eligible.tolist() == [len(pool) - len(set(e) & set(pool.tolist())) for e in exclude]


def test_a_filter_the_index_cannot_fill_is_scanned(table, monkeypatch):
    """An ANN index whose candidates all fall outside the filter: the queries are scanned exactly."""
    class Useless:
        def __len__(self):
            return N

        def search(self, queries, k):
            return np.zeros((len(queries), k), np.float32), np.full((len(queries), k), -1, np.int64)

    rng = np.random.default_rng(2)
    queries = unit(rng.normal(size=(3, DIM)))
    allowed = np.sort(table.ids[::3])
    found, _, _ = nearest(table, queries, 5, ann=Useless(), allowed=allowed)
    assert rows_of(found) == brute_force(table, queries, 5, set(allowed.tolist()))
    monkeypatch.setattr(core, "MIN_ANN_FILTER_SHARE", 1.0)  # every filter scanned: the index is never asked
    found, _, _ = nearest(table, queries, 5, ann=Useless(), allowed=allowed)
    assert rows_of(found) == brute_force(table, queries, 5, set(allowed.tolist()))


@pytest.mark.parametrize("with_index", [False, True])
def test_a_filter_that_keeps_nothing_finds_nothing(table, with_index):
    ids, vectors, _ = table.view
    ann = make_index("exact", DIM) if with_index else None
    if ann is not None:
        ann.add(ids.copy(), vectors.copy())
    found, scores, eligible = nearest(table, vectors[:3], 5, ann=ann, allowed=np.array([], np.int64))
    assert (found == -1).all() and np.isneginf(scores).all() and (eligible == 0).all()

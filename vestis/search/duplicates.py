"""Near-duplicate listings in a collection: the same product photographed again, re-uploaded
resized or re-encoded, mirrored, lightly cropped or relit.

Every item asks the collection for its nearest neighbours (``search_vectors``: the collection's
own ANN index, or its exact scan while small), so a 44k catalogue takes a minute, not all pairs at
1280-d. Two items whose cosine similarity is at least ``threshold`` are a pair; pairs that share an
item form a group (union-find). The default threshold was chosen on a benchmark of altered copies
(BENCHMARKS.md "Near-duplicates").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vestis.errors import VestisError
from vestis.store.protocol import CollectionStore

DEFAULT_THRESHOLD = 0.92  # pair precision 0.95 on altered copies of catalogue photos, 85 % of copies found
NEIGHBOURS = 10  # nearest items each item is compared with


@dataclass
class DuplicateGroup:
    """Items that duplicate each other, and the pairs (id, id, similarity) that joined them."""

    ids: list[str]
    pairs: list[tuple[str, str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"ids": self.ids, "pairs": [{"a": a, "b": b, "score": round(s, 6)} for a, b, s in self.pairs]}


@dataclass
class DuplicateReport:
    groups: list[DuplicateGroup]
    items: int
    threshold: float
    seconds: float

    @property
    def pairs(self) -> int:
        return sum(len(g.pairs) for g in self.groups)

    def as_dict(self) -> dict[str, object]:
        return {"items": self.items, "threshold": self.threshold, "groups": len(self.groups), "pairs": self.pairs,
                "seconds": round(self.seconds, 3), "duplicates": [g.as_dict() for g in self.groups]}


def check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, (int, float)) and np.isfinite(threshold) and 0.5 <= threshold <= 1.0):
        raise VestisError(f"the threshold is a cosine similarity between 0.5 and 1 (got {threshold!r})")
    return float(threshold)


def find_duplicates(collection: CollectionStore, threshold: float = DEFAULT_THRESHOLD, *,
                    neighbours: int = NEIGHBOURS,
                    progress: Callable[[int, int], None] | None = None) -> DuplicateReport:
    """The groups of near-duplicate items of ``collection`` (see the module docstring), largest first."""
    threshold = check_threshold(threshold)
    started = time.perf_counter()
    with collection.lock:  # one generation's vectors
        table = collection.table()
        vids, vectors, _ = table.view
        vids, vectors = vids.copy(), np.asarray(vectors, np.float32)
    pairs: dict[tuple[int, int], float] = {}
    for row, vid in enumerate(vids.tolist()):
        near, scores, _ = collection.search_vectors(vectors[row], neighbours, exclude=(vid,))
        for other, score in zip(near.tolist(), scores.tolist()):
            if score >= threshold:
                pairs[(min(vid, other), max(vid, other))] = max(score, pairs.get((min(vid, other), max(vid, other)), 0))
        if progress is not None and (row % 256 == 0 or row == len(vids) - 1):
            progress(row + 1, len(vids))
    groups = _groups(pairs)
    ids = {it.vid: it.id for it in collection.items_by_vid(sorted({v for pair in pairs for v in pair}))}
    out = [DuplicateGroup(sorted(ids[v] for v in members),
                          sorted(((ids[a], ids[b], s) for (a, b), s in pairs.items() if a in members),
                                 key=lambda p: -p[2]))
           for members in groups if all(v in ids for v in members)]
    out.sort(key=lambda g: (-len(g.ids), -g.pairs[0][2], g.ids))
    return DuplicateReport(out, len(vids), threshold, time.perf_counter() - started)


def _groups(pairs: dict[tuple[int, int], float]) -> list[set[int]]:
    parent: dict[int, int] = {}

    def root(v: int) -> int:
        parent.setdefault(v, v)
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for a, b in pairs:
        parent[root(a)] = root(b)
    members: dict[int, set[int]] = {}
    for v in parent:
        members.setdefault(root(v), set()).add(v)
    return list(members.values())

"""Near-duplicate listings in a collection: the same product photographed again, re-uploaded
resized or re-encoded, mirrored, lightly cropped or relit.

Every item asks the collection for its nearest neighbours (``search_vectors``: the collection's
own ANN index, or its exact scan while small), so a 44k catalogue takes a minute, not all pairs at
1280-d. A pair's similarity is the cosine of the deep vectors fused with the colour descriptors'
similarity, ``(cos + w colour) / (1 + w)``: the colour histogram does not change when a photo is
resized, which the deep vector of a small copy does. Two items at or above ``threshold`` are a
pair; a group is an item and the items that duplicate it (star-shaped, so that look-alikes do
not chain into one huge group); every pair is listed too. The colour weight and the threshold were
chosen on half of a benchmark's altered copies and measured on the other half (BENCHMARKS.md
"Near-duplicates").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vestis.errors import VestisError
from vestis.store.protocol import CollectionStore

DEFAULT_THRESHOLD = 0.915  # on held-out altered copies of catalogue photos: 92 % found, pair precision 0.96
COLOUR_WEIGHT = 0.5  # of the colour similarity beside the deep cosine (a collection without colours: none)
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
    pairs_found: list[tuple[str, str, float]]  # every pair at or above the threshold, best first
    items: int
    threshold: float
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {"items": self.items, "threshold": self.threshold, "groups": len(self.groups),
                "pairs": len(self.pairs_found), "seconds": round(self.seconds, 3),
                "duplicates": [g.as_dict() for g in self.groups],
                "all_pairs": [{"a": a, "b": b, "score": round(s, 6)} for a, b, s in self.pairs_found]}


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
        vids, vectors, colours = table.view
        vids, vectors, colours = vids.copy(), np.asarray(vectors, np.float32), np.asarray(colours, np.float32)
    weight = COLOUR_WEIGHT if collection.colour_dim else 0.0
    pairs: dict[tuple[int, int], float] = {}
    for row, vid in enumerate(vids.tolist()):
        near, scores, _ = collection.search_vectors(vectors[row], neighbours, exclude=(vid,))
        if weight and len(near):  # the colour of the few neighbours, from the same table
            scores = scores + weight * (colours[table.rows_of(near)] @ colours[row])
        for other, score in zip(near.tolist(), (scores / (1 + weight)).tolist()):
            if score >= threshold:
                key = (min(vid, other), max(vid, other))
                pairs[key] = max(score, pairs.get(key, 0.0))
        if progress is not None and (row % 256 == 0 or row == len(vids) - 1):
            progress(row + 1, len(vids))
    ids = {it.vid: it.id for it in collection.items_by_vid(sorted({v for pair in pairs for v in pair}))}
    pairs = {(a, b): s for (a, b), s in pairs.items() if a in ids and b in ids}  # removed meanwhile: left out
    out = [DuplicateGroup(sorted(ids[v] for v in members),
                          sorted(((ids[a], ids[b], s) for (a, b), s in pairs.items() if a in members and b in members),
                                 key=lambda p: -p[2]))
           for members in _groups(pairs)]
    out.sort(key=lambda g: (-len(g.ids), -g.pairs[0][2], g.ids))
    every = sorted(((ids[a], ids[b], s) for (a, b), s in pairs.items()), key=lambda p: -p[2])
    return DuplicateReport(out, every, len(vids), threshold, time.perf_counter() - started)


def _groups(pairs: dict[tuple[int, int], float]) -> list[set[int]]:
    """Star-shaped groups: pairs are taken best first, and an item joins a group only as a duplicate
    of the group's first item (its leader), so look-alikes never chain into one huge group."""
    leader: dict[int, int] = {}
    members: dict[int, set[int]] = {}
    for (a, b), _score in sorted(pairs.items(), key=lambda kv: -kv[1]):
        la, lb = leader.get(a), leader.get(b)
        if la is None and lb is None:
            leader[a] = leader[b] = a
            members[a] = {a, b}
            continue
        if la is not None and lb is not None:
            continue
        grouped, new = (a, b) if la is not None else (b, a)
        head = leader[grouped]
        if grouped == head or (min(head, new), max(head, new)) in pairs:
            leader[new] = head
            members[head].add(new)
    return list(members.values())


class DuplicateFilter:
    """For ``vestis index --skip-duplicates``: which new items duplicate an item the collection holds,
    or one accepted earlier in the same run, at ``threshold`` (the similarity of :func:`find_duplicates`)."""

    def __init__(self, collection: CollectionStore, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.collection, self.threshold = collection, check_threshold(threshold)
        self.weight = COLOUR_WEIGHT if collection.colour_dim else 0.0
        self._accepted: list[tuple[str, np.ndarray, np.ndarray | None]] = []

    def __call__(self, items: list) -> dict[str, tuple[str, float]]:
        """id -> (the item it duplicates, similarity) for each of ``items`` (NewItem) to leave out."""
        out: dict[str, tuple[str, float]] = {}
        for item in items:
            colour = item.colour if self.weight and item.colour is not None else None
            near, scores, _ = self.collection.search_vectors(item.vector, 1, colour=colour,
                                                             colour_weight=self.weight if colour is not None else 0.0)
            best = (self.collection.items_by_vid(near[:1].tolist())[0].id, float(scores[0])) if len(near) else None
            if best is not None and best[0] != item.id and best[1] / (1 + self.weight) >= self.threshold:
                out[item.id] = (best[0], best[1] / (1 + self.weight))
                continue
            for other, vector, other_colour in self._accepted:  # new items of this run, not yet stored
                score = float(vector @ item.vector) + (self.weight * float(other_colour @ item.colour)
                                                        if colour is not None and other_colour is not None else 0.0)
                if score / (1 + self.weight) >= self.threshold:
                    out[item.id] = (other, score / (1 + self.weight))
                    break
            else:
                self._accepted.append((item.id, item.vector, item.colour))
        return out

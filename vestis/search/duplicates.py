"""Near-duplicate listings in a collection: the same product photographed again, re-uploaded
resized or re-encoded, mirrored, lightly cropped or relit.

Every item asks the collection for its nearest neighbours (``search_batch``: the collection's own
ANN index, or its exact scan while small, many items per call), so a 44k catalogue takes a minute,
not all pairs at 1280-d. A pair's similarity is the cosine of the deep vectors fused with the
colour descriptors' similarity, ``(cos + w colour) / (1 + w)``. Two items at or above
``threshold`` are a pair. Below it, from ``confirm_from``, a pair needs a second look at the
pixels: the normalised cross-correlation of the two photos' 32x32 grayscale thumbnails (or of one
and the other's mirror image) at ``CONFIRM_NCC`` or more. A half-size copy loses the detail the
encoder sees, but its thumbnail is the original's; two different products in the same pose differ
there. A group is an item and the items that duplicate it (star-shaped, so that look-alikes do not
chain into one huge group); every pair is listed too. The weights and thresholds were chosen on
half of a benchmark's altered copies and measured on the other half (BENCHMARKS.md
"Near-duplicates").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from vestis.data.images import decode_image
from vestis.data.sources import read_source
from vestis.errors import VestisError
from vestis.store.protocol import CollectionStore

DEFAULT_THRESHOLD = 0.94  # a pair on the similarity alone; with confirmation, held-out copies 97 % found at 0.98
CONFIRM_FROM = 0.86  # from here to the threshold a pair needs its thumbnails to agree
CONFIRM_NCC = 0.98  # the thumbnails' normalised cross-correlation that confirms a pair
THUMB = 32  # thumbnail side, pixels
COLOUR_WEIGHT = 0.5  # of the colour similarity beside the deep cosine (a collection without colours: none)
NEIGHBOURS = 10  # nearest items each item is compared with
BATCH = 512  # items searched per call


class Thumbnails:
    """Grayscale thumbnails of item sources (mean removed, unit length), read once each; ``agree``
    says whether two sources show the same photo (up to size, JPEG, brightness and mirroring)."""

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray | None] = {}

    def get(self, source: str) -> np.ndarray | None:
        """The thumbnail, or None when the source cannot be read or is one flat colour."""
        if source not in self._cache:
            try:
                image = decode_image(read_source(source), source=source)
            except VestisError:
                self._cache[source] = None
                return None
            pixels = np.asarray(image.convert("L").resize((THUMB, THUMB), Image.Resampling.BOX), np.float32)
            pixels = pixels - pixels.mean()
            norm = float(np.linalg.norm(pixels))
            self._cache[source] = pixels / norm if norm > 1e-3 else None
        return self._cache[source]

    def correlation(self, a: str, b: str) -> float:
        """The larger cross-correlation of ``a`` with ``b`` or with ``b`` mirrored (-1 when unreadable)."""
        ta, tb = self.get(a), self.get(b)
        if ta is None or tb is None:
            return -1.0
        return max(float((ta * tb).sum()), float((ta * tb[:, ::-1]).sum()))

    def agree(self, a: str, b: str) -> bool:
        return self.correlation(a, b) >= CONFIRM_NCC


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
    pairs_found: list[tuple[str, str, float]]  # every pair, best first (those under the threshold confirmed)
    items: int
    threshold: float
    seconds: float
    confirmed: int = 0  # pairs under the threshold that the thumbnails confirmed

    def as_dict(self) -> dict[str, object]:
        return {"items": self.items, "threshold": self.threshold, "groups": len(self.groups),
                "pairs": len(self.pairs_found), "confirmed": self.confirmed, "seconds": round(self.seconds, 3),
                "duplicates": [g.as_dict() for g in self.groups],
                "all_pairs": [{"a": a, "b": b, "score": round(s, 6)} for a, b, s in self.pairs_found]}


def check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, (int, float)) and np.isfinite(threshold) and 0.5 <= threshold <= 1.0):
        raise VestisError(f"the threshold is a cosine similarity between 0.5 and 1 (got {threshold!r})")
    return float(threshold)


def find_duplicates(collection: CollectionStore, threshold: float = DEFAULT_THRESHOLD, *,
                    confirm_from: float | None = CONFIRM_FROM, neighbours: int = NEIGHBOURS,
                    progress: Callable[[int, int], None] | None = None) -> DuplicateReport:
    """The groups of near-duplicate items of ``collection`` (see the module docstring), largest
    first. ``confirm_from`` None: no thumbnail confirmation, pairs at ``threshold`` only."""
    threshold = check_threshold(threshold)
    floor = threshold if confirm_from is None else min(threshold, check_threshold(confirm_from))
    started = time.perf_counter()
    with collection.lock:  # one generation's vectors
        table = collection.table()
        vids, vectors, colours = table.view
        vids, vectors, colours = vids.copy(), np.asarray(vectors, np.float32), np.asarray(colours, np.float32)
    weight = COLOUR_WEIGHT if collection.colour_dim else 0.0
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(vids), BATCH):
        chunk = vids[start:start + BATCH]
        near, scores, _ = collection.search_batch(vectors[start:start + BATCH], neighbours,
                                                  exclude=[(vid,) for vid in chunk.tolist()])
        found = near >= 0
        if weight and found.any():  # the colour of the few neighbours, from the same table
            rows = np.zeros(near.shape, np.int64)
            rows[found] = table.rows_of(near[found])
            scores = scores + weight * np.einsum("qkd,qd->qk", colours[rows], colours[start:start + BATCH])
        scores = scores / (1 + weight)
        for q, k in zip(*np.nonzero(found & (scores >= floor))):
            a, b = int(chunk[q]), int(near[q, k])
            key = (min(a, b), max(a, b))
            pairs[key] = max(float(scores[q, k]), pairs.get(key, 0.0))
        if progress is not None:
            progress(start + len(chunk), len(vids))
    items = {it.vid: it for it in collection.items_by_vid(sorted({v for pair in pairs for v in pair}))}
    thumbnails = Thumbnails()
    pairs = {(a, b): s for (a, b), s in pairs.items() if a in items and b in items  # removed meanwhile: left out
             and (s >= threshold or thumbnails.agree(items[a].source, items[b].source))}
    ids = {vid: it.id for vid, it in items.items()}
    groups = _groups(pairs)
    group_of = {v: n for n, members in enumerate(groups) for v in members}
    listed: list[list[tuple[str, str, float]]] = [[] for _ in groups]
    for (a, b), s in pairs.items():  # a group lists every pair of its members
        if a in group_of and group_of.get(b) == group_of[a]:
            listed[group_of[a]].append((ids[a], ids[b], s))
    out = [DuplicateGroup(sorted(ids[v] for v in members), sorted(listed[n], key=lambda p: -p[2]))
           for n, members in enumerate(groups)]
    out.sort(key=lambda g: (-len(g.ids), -g.pairs[0][2], g.ids))
    every = sorted(((ids[a], ids[b], s) for (a, b), s in pairs.items()), key=lambda p: -p[2])
    return DuplicateReport(out, every, len(vids), threshold, time.perf_counter() - started,
                           sum(s < threshold for s in pairs.values()))


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
    or one accepted earlier in the same run, as :func:`find_duplicates` pairs them (at ``threshold``,
    or from ``CONFIRM_FROM`` with the thumbnails' agreement)."""

    def __init__(self, collection: CollectionStore, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.collection, self.threshold = collection, check_threshold(threshold)
        self.weight = COLOUR_WEIGHT if collection.colour_dim else 0.0
        self.thumbnails = Thumbnails()
        self._accepted: list[tuple[str, str, np.ndarray, np.ndarray | None]] = []

    def _pairs(self, score: float, source: str, other_source: str) -> bool:
        return score >= self.threshold or (score >= min(self.threshold, CONFIRM_FROM)
                                           and self.thumbnails.agree(source, other_source))

    def __call__(self, items: list) -> dict[str, tuple[str, float]]:
        """id -> (the item it duplicates, similarity) for each of ``items`` (NewItem) to leave out."""
        out: dict[str, tuple[str, float]] = {}
        for item in items:
            colour = item.colour if self.weight and item.colour is not None else None
            near, scores, _ = self.collection.search_vectors(item.vector, 1, colour=colour,
                                                             colour_weight=self.weight if colour is not None else 0.0)
            best = self.collection.items_by_vid(near[:1].tolist())[0] if len(near) else None
            score = float(scores[0]) / (1 + self.weight) if best is not None else 0.0
            if best is not None and best.id != item.id and self._pairs(score, item.source, best.source):
                out[item.id] = (best.id, score)
                continue
            for other, other_source, vector, other_colour in self._accepted:  # new items of this run, not yet stored
                score = (float(vector @ item.vector) + (self.weight * float(other_colour @ item.colour)
                                                        if colour is not None and other_colour is not None else 0.0)
                         ) / (1 + self.weight)
                if self._pairs(score, item.source, other_source):
                    out[item.id] = (other, score)
                    break
            else:
                self._accepted.append((item.id, item.source, item.vector, item.colour))
        return out

"""What every searcher shares: the embedded query, the result types, the limits and their checks,
and the building of hits from vids. The global, attribute and text searchers each build their
query and answer ``search(query, k, offset, filters, ..., timings)`` with a :class:`SearchResponse`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.store.collection import Collection

MAX_K = 1000
MAX_OFFSET = 10_000
MAX_COLOUR_WEIGHT = 10.0


@dataclass
class SearchHit:
    id: str
    score: float
    source: str
    metadata: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResponse:
    hits: list[SearchHit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    candidates: int = 0  # how many items were eligible (after filters)

    def as_dict(self) -> dict[str, Any]:
        return {
            "results": [
                {"id": h.id, "score": round(h.score, 6), "path": h.source, "metadata": h.metadata} for h in self.hits
            ],
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }


@dataclass
class Query:
    """An embedded query: deep vector, colour descriptor, and vids to leave out of the results."""

    vector: np.ndarray
    colour: np.ndarray | None = None
    exclude: tuple[int, ...] = ()


def check_options(k: int, offset: int, colour_weight: float, *, has_colour: bool) -> None:
    """The limits every search applies (the API's schema states the same ones)."""
    if not 1 <= k <= MAX_K:
        raise VestisError(f"k must be between 1 and {MAX_K} (got {k})")
    if not 0 <= offset <= MAX_OFFSET:
        raise VestisError(f"offset must be between 0 and {MAX_OFFSET} (got {offset})")
    if not math.isfinite(colour_weight):
        raise VestisError(f"colour weight must be a finite number (got {colour_weight})")
    if not 0 <= colour_weight <= MAX_COLOUR_WEIGHT:
        raise VestisError(f"colour weight must be between 0 and {MAX_COLOUR_WEIGHT:g} (got {colour_weight})")
    if colour_weight and not has_colour:
        raise VestisError("colour weight needs colour features in the collection and the query; use 0")


def hits_for(collection: Collection, vids: np.ndarray, scores: np.ndarray) -> list[SearchHit]:
    """Hits for ranked vids (items removed meanwhile are skipped), with their stored metadata."""
    items = {it.vid: it for it in collection.items_by_vid(vids.tolist())}
    return [
        SearchHit(items[v].id, float(s), items[v].source, items[v].metadata)
        for v, s in zip(vids.tolist(), scores.tolist())
        if v in items
    ]

"""Category-aware region search: a region's results split between the parts of its catalogue scope
that a shopper's photo may show (an upper-body region shows a top or a dress), in proportion to how
sure the catalogue is of the part.

The catalogue itself says which part a region looks like: a logistic regression (scikit-learn,
classes balanced) fitted on the collection's own stored vectors and their part labels (no label of
any query), refitted after a write. Each part is then searched on its own and the page is shared:

- the page belongs to an alternative part (a dress) the region is likely to show
  (``p >= owns_from``), else to the main part (the tops);
- every other part it may show (``p >= share_from``) gets ``share`` of the page, at least one
  result, among the first results whatever the page's length (the classifier errs: half the
  photos of tank tops look like dresses to it);
- the page's owner gets the rest; the hits are ranked by score.

The thresholds were chosen on a validation half of the street-to-shop queries and reported on the
other half (benchmarks/results/street-to-shop/README.md): knowing the garment's part is what a
region search of a photo of a person lacks most.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vestis.locks import leaf_lock
from vestis.search.results import MAX_K, SearchHit, SearchResponse
from vestis.store.protocol import CollectionStore

# region -> (column, alternative parts): the rest of the region's scope in that column is its main part
REGION_PARTS: dict[str, tuple[str, tuple[str, ...]]] = {"top": ("subCategory", ("Dress",))}
logger = logging.getLogger(__name__)
MIN_ITEMS = 20  # a part with fewer labelled items is not learned: the scope is searched whole


@dataclass(frozen=True)
class SplitSettings:
    """An alternative part owns the page from ``owns_from``; any other part gets ``share`` of it
    from ``share_from`` (probabilities; chosen on the validation half, see the module)."""

    owns_from: float = 0.6
    share_from: float = 0.05
    share: float = 0.1


@dataclass
class PartSplit:
    """The parts of one region's scope and the model that tells them apart (see the module)."""

    column: str
    main: list[str]
    alternatives: list[str]
    model: object  # a fitted sklearn LogisticRegression; classes 0 = main, 1.. = the alternatives
    settings: SplitSettings

    @classmethod
    def fit(cls, collection: CollectionStore, column: str, main: list[str], alternatives: list[str],
            settings: SplitSettings) -> PartSplit | None:
        """The split learned from ``collection``'s vectors, or None when a part has too few items."""
        from sklearn.linear_model import LogisticRegression

        groups = [collection.filter_vids({column: main})] + [collection.filter_vids({column: [a]})
                                                             for a in alternatives]
        if any(len(g) < MIN_ITEMS for g in groups):
            return None
        table = collection.table()
        rows = [r[r >= 0] for r in (table.rows_of(np.asarray(g, np.int64)) for g in groups)]
        vectors = np.concatenate([table.take(r) for r in rows])
        labels = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])
        model = LogisticRegression(max_iter=500, class_weight="balanced").fit(vectors, labels)
        return cls(column, main, alternatives, model, settings)

    def probabilities(self, vector: np.ndarray) -> dict[str, float]:
        """How likely the region shows each part ("" is the main part)."""
        p = self.model.predict_proba(np.asarray(vector, np.float32).reshape(1, -1))[0]
        return {"": float(p[0]), **{a: float(p[i + 1]) for i, a in enumerate(self.alternatives)}}

    def quotas(self, vector: np.ndarray, n: int) -> dict[str, int]:
        """How many of the first ``n`` results each part gets, the part that owns the page first."""
        s, p = self.settings, self.probabilities(vector)
        likely = [part for part in self.alternatives if p[part] >= s.owns_from]
        owner = max(likely, key=p.__getitem__) if likely else ""
        quotas, room = {}, n
        for part in sorted(p, key=lambda part: -p[part]):
            if part != owner and p[part] >= s.share_from:
                quotas[part] = min(max(1, round(s.share * n)), room)
                room -= quotas[part]
        return {owner: room, **quotas}

    def search(self, vector: np.ndarray, k: int, offset: int,
               search_part: Callable[[dict[str, list[str]], int], SearchResponse]) -> SearchResponse:
        """The page ``offset:offset + k`` of the split search; ``search_part(filter, n)`` answers
        the ``n`` best of one part."""
        n = offset + k
        ranked, timings, candidates = {}, {}, 0
        quotas = self.quotas(vector, n)
        for part, quota in quotas.items():
            if quota:
                response = search_part({self.column: self.main if part == "" else [part]}, min(quota, MAX_K))
                ranked[part] = response.hits
                candidates += response.candidates
                for key, ms in response.timings_ms.items():
                    timings[key] = timings.get(key, 0.0) + ms
        return SearchResponse(merge(ranked, n, owner=next(iter(quotas)))[offset:n], timings, candidates)


def merge(ranked: dict[str, list[SearchHit]], n: int, owner: str) -> list[SearchHit]:
    """The parts' hits as one list ranked by score, except that a part other than the page's
    ``owner`` with ``q`` hits has its ``i``-th after rank ``i * n / q`` and by rank
    ``(i + 1) * n / q``: its share shows in every stretch of the list, the first page included,
    and no more than its share, however long the list asked for."""
    quotas = {part: len(hits) for part, hits in ranked.items()}
    taken = dict.fromkeys(ranked, 0)
    out: list[SearchHit] = []
    left = [p for p in ranked if quotas[p]]
    while len(out) < n and left:
        rank = len(out) + 1
        # a share neither falls behind nor runs ahead: its i-th hit between ranks i*n/q and (i+1)*n/q
        fair = [p for p in left if p == owner or taken[p] * n < rank * quotas[p]]
        due = [p for p in fair if p != owner and (taken[p] + 1) * n // quotas[p] <= rank]
        open_parts = due or fair or left
        part = max(open_parts, key=lambda p: ranked[p][taken[p]].score)
        out.append(ranked[part][taken[part]])
        taken[part] += 1
        left = [p for p in left if taken[p] < quotas[p]]
    return out


class PartSplits:
    """The :class:`PartSplit` of each region for one collection (thread-safe). The first use fits it
    (seconds on a large catalogue); after a write the last fit keeps answering while a background
    thread fits the new one, so a write never stalls a region search. The fit reads the collection
    under its own lock; this object's leaf lock guards only its memory (see :mod:`vestis.locks`)."""

    def __init__(self, settings: SplitSettings | None = None) -> None:
        self.settings = settings or SplitSettings()
        self._lock = leaf_lock("part splits")
        self._fitted: dict[tuple[str, tuple[str, ...]], tuple[int, PartSplit | None]] = {}
        self._refitting: set[tuple[str, tuple[str, ...]]] = set()

    def get(self, collection: CollectionStore, region: str, scope: dict[str, list[str]]) -> PartSplit | None:
        """The split for ``region`` searched within ``scope`` (its catalogue part, see
        :func:`vestis.search.regions.region_scope`), or None when the region has no parts to tell
        apart there (no labels, a filter of the column, a part the scope lacks)."""
        if region not in REGION_PARTS:
            return None
        column, alternatives = REGION_PARTS[region]
        values: Sequence[str] = scope.get(column, ())
        present = [a for a in alternatives if a in values]
        main = [v for v in values if v not in alternatives]
        if not present or not main:
            return None
        key = (region, tuple(values))
        generation = collection.generation

        def fit() -> tuple[int, PartSplit | None]:
            return generation, PartSplit.fit(collection, column, main, present, self.settings)

        with self._lock:
            known = self._fitted.get(key)
            stale = known is not None and known[0] != generation and key not in self._refitting
            if stale:
                self._refitting.add(key)
        if known is None:
            fitted = fit()
            with self._lock:
                self._fitted.setdefault(key, fitted)
            return fitted[1]
        if stale:
            threading.Thread(target=self._refit, args=(key, fit), name="part-split refit", daemon=True).start()
        return known[1]

    def _refit(self, key: tuple[str, tuple[str, ...]], fit: Callable[[], tuple[int, PartSplit | None]]) -> None:
        try:
            fitted = fit()
        except Exception:  # noqa: BLE001 - a refit that fails (the collection closed) keeps the last fit
            logger.warning("refitting the part split of %s failed; the last fit stays in use", key[0], exc_info=True)
            fitted = None
        with self._lock:
            if fitted is not None:
                self._fitted[key] = fitted
            self._refitting.discard(key)

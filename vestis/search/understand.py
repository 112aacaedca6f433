"""Query understanding: which values of the collection's label columns a text query names.

A *label column* is a metadata column with few distinct word values (articleType, baseColour,
gender, ...): found from the collection itself, so it works on any catalogue; titles (the joint
model's text column), ids, numbers and yes/no flags are left out. Every run of one to three words
of the query (runs made only of stop words left out) is compared with every value: exactly (case,
punctuation and a plural "s" aside: "t-shirt" is "Tshirts") or by meaning, the cosine similarity
of their sentence vectors (the text encoder of the joint model: "rucksack" is near "Backpacks",
"ladies" near "Women"), in the text encoder's own space or, with ``project``, after the joint
model's text head (where words sit near the catalogue's photos of them). Per column, the best
value at or above ``min_similarity`` is read, and
with it any other value within ``margin`` of it (a word can mean two close labels). With a
``rewrite`` (:meth:`vestis.store.keyword_index.KeywordIndex.rewrite`), the runs are read after the
spelling is corrected, and a run the shop vocabulary expands reads the values its words name
exactly ("tee" -> tshirts: articleType=Tshirts). The value
vectors are embedded once and cached with the collection (:func:`vestis.encoders.text.embed_texts`).

The hybrid ranking of :mod:`vestis.search.text` uses what was read: the items having the values
are a third candidate list beside the vector and keyword ones, and an item's score gains
``label_weight`` times the share of the read columns whose value it has.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vestis.data.vocabulary import Rewrite, singular, tokens
from vestis.encoders.text import TextEncoder, embed_texts
from vestis.locks import leaf_lock
from vestis.store.collection import Collection
from vestis.store.keyword_index import is_word_value, stop_words
from vestis.store.mined import MAX_VALUES, label_columns


MAX_SPAN = 3  # words per run compared with the values
RUN_CACHE = 20_000  # vectors of recent runs of words kept (queries repeat their words: "black", "for men")
EXACT = 1.0  # the similarity given to an exact match
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def spans(text: str, longest: int = MAX_SPAN) -> list[str]:
    """The runs of 1 to ``longest`` words of ``text`` (lower case) that neither start nor end with a
    stop word ("a tee" adds nothing to "tee"; "t-shirt for men" is kept)."""
    words = _WORD.findall(text.lower())
    stop = stop_words()
    out = [" ".join(words[start:start + n]) for n in range(1, longest + 1) for start in range(len(words) - n + 1)
           if words[start] not in stop and words[start + n - 1] not in stop]
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class LabelMatch:
    """A value of a label column read in the query's ``words``, with the similarity (1: exact)."""

    column: str
    value: str
    words: str
    similarity: float
    via: str = ""  # the vocabulary's word the query's words were read as, if any

    def as_dict(self) -> dict[str, object]:
        return {"column": self.column, "value": self.value, "words": self.words,
                "similarity": round(self.similarity, 3), **({"via": self.via} if self.via else {})}


@dataclass(frozen=True)
class Understanding:
    """The label values read in a query (possibly none) and how its words were rewritten."""

    matches: tuple[LabelMatch, ...] = ()
    rewrite: Rewrite | None = None

    def __bool__(self) -> bool:
        return bool(self.matches or self.rewrite)

    @property
    def filters(self) -> dict[str, list[str]]:
        """column -> the values read in it (an item has the column's label when it has one of them)."""
        out: dict[str, list[str]] = {}
        for m in self.matches:
            out.setdefault(m.column, []).append(m.value)
        return out

    def narrowed(self, min_similarity: float, margin: float) -> Understanding:
        """Per column, the values at or above ``min_similarity`` and within ``margin`` of the column's
        best (what :meth:`LabelVocabulary.understand` reads with these settings, when this was read
        with a lower or equal ``min_similarity`` and a wider or equal ``margin``)."""
        top: dict[str, float] = {}
        for m in self.matches:
            top[m.column] = max(top.get(m.column, 0.0), m.similarity)
        return Understanding(tuple(m for m in self.matches
                                   if m.similarity >= max(min_similarity, top[m.column] - margin)), self.rewrite)

    def describe(self) -> str:
        """One line for people: ``articleType=Backpacks ("rucksack" 0.91), baseColour=Black ("black")``,
        then what was rewritten: ``; rewritten: tee -> tshirts``."""
        read = ", ".join(f'{m.column}={m.value} ("{m.words}"' + (f" = {m.via}" if m.via else "")
                         + ("" if m.similarity >= EXACT else f" {m.similarity:.2f}") + ")" for m in self.matches)
        rewritten = self.rewrite.describe() if self.rewrite else ""
        return "; ".join(p for p in (read, rewritten and f"rewritten: {rewritten}") if p)

    def as_dict(self) -> dict[str, object]:
        return {"labels": [m.as_dict() for m in self.matches],
                **({"rewritten": self.rewrite.as_dict()} if self.rewrite else {})}


@dataclass(frozen=True)
class _Labels:
    """The label values of one collection generation, with their vectors and their items."""

    generation: int
    columns: list[str]  # the column of each value
    values: list[str]
    order: dict[str, int]  # column -> its rank (columns listed in the collection's order)
    by_key: dict[str, list[int]]  # exact form -> value positions
    members: dict[tuple[str, str], np.ndarray]  # (column, value) -> its items' vids, sorted
    vectors: np.ndarray  # one row per value


class LabelVocabulary:
    """The label columns of a collection, their values and the values' sentence vectors, kept in
    step with the collection (rebuilt after a write). Thread-safe, in the lock order of
    :mod:`vestis.locks`: the labels are read from the collection and rebuilt under the collection's
    lock into an immutable :class:`_Labels`, and the cache of recent words' vectors has a leaf lock
    of its own, held for no more than its dictionary operations."""

    def __init__(self, collection: Collection, encoder: TextEncoder, skip_columns: Sequence[str] = (),
                 project: Callable[[np.ndarray], np.ndarray] | None = None,
                 rewrite: Callable[[str], Rewrite] | None = None):
        self.collection, self.encoder, self.project, self.rewrite = collection, encoder, project, rewrite
        self.skip = set(skip_columns)
        self._labels: _Labels | None = None
        self._runs_lock = leaf_lock(f"label vocabulary {collection.path}")
        self._runs: OrderedDict[str, np.ndarray] = OrderedDict()  # run of words -> its vector, least recent first

    def label_columns(self) -> dict[str, list[str]]:
        """Each label column with its word values (see the module docstring)."""
        return label_columns(self.collection.metadata_columns(max_values=MAX_VALUES + 1), len(self.collection),
                             is_word_value, self.skip)

    def _current(self) -> _Labels:
        """The labels of the collection's current generation (rebuilt when it moved)."""
        with self.collection.lock:  # the columns read below belong to the generation read here
            generation = self.collection.generation
            labels = self._labels
            if labels is None or labels.generation != generation:
                labels = self._labels = self._read(generation)
            return labels

    def _read(self, generation: int) -> _Labels:
        pairs = [(c, v) for c, values in self.label_columns().items() for v in values]
        columns, values = [c for c, _ in pairs], [v for _, v in pairs]
        by_key: dict[str, list[int]] = {}
        for j, value in enumerate(values):
            for key in {_key(value), _key(singular(value))}:
                by_key.setdefault(key, []).append(j)
        return _Labels(generation, columns, values, {c: i for i, c in enumerate(dict.fromkeys(columns))}, by_key,
                       {(c, v): self.collection.filter_vids({c: [v]}) for c, v in pairs},
                       self._space(embed_texts(values, self.encoder, self.collection.path / "cache")[0]))

    def _space(self, vectors: np.ndarray) -> np.ndarray:
        return vectors if self.project is None or not len(vectors) else self.project(vectors)

    def _run_vectors(self, runs: list[str]) -> np.ndarray:
        """The vectors of runs of words (only those not seen recently are embedded, in one batch,
        outside the cache's lock)."""
        with self._runs_lock:
            known = {r: self._runs[r] for r in runs if r in self._runs}
        new = [r for r in runs if r not in known]
        if new:
            known.update(zip(new, self._space(self.encoder.embed(new))))
        with self._runs_lock:
            for run in runs:
                self._runs[run] = known[run]
                self._runs.move_to_end(run)
            while len(self._runs) > RUN_CACHE:
                self._runs.popitem(last=False)
        return np.stack([known[r] for r in runs])

    def understand(self, text: str, min_similarity: float, margin: float) -> Understanding:
        """The label values ``text`` names (see the module docstring)."""
        rewrite = self.rewrite(text) if self.rewrite is not None else None
        runs = spans(rewrite.text if rewrite is not None else text)
        labels = self._current()
        if not runs or not labels.values:
            return Understanding(rewrite=rewrite or None)
        similarity = self._run_vectors(runs) @ labels.vectors.T  # runs x values
        expanded = dict(rewrite.expanded) if rewrite is not None else {}
        via: dict[tuple[int, int], str] = {}  # (run, value) read through the vocabulary -> its word
        exact = []
        for i, run in enumerate(runs):
            read = list(labels.by_key.get(_key(run), []))
            for word in expanded.get(" ".join(tokens(run)), ()):
                for j in labels.by_key.get(_key(word), []):
                    if j not in read:
                        read.append(j)
                        via[i, j] = word
            if read:
                exact.append(run)
                similarity[i, read] = EXACT
        for i, run in enumerate(runs):  # a run inside an exact one is part of it ("blue" in "navy blue")
            if any(f" {run} " in f" {other} " for other in exact if other != run):
                similarity[i] = -1.0
        best_run = similarity.argmax(0)
        best = similarity[best_run, np.arange(len(labels.values))]
        found = [LabelMatch(labels.columns[j], labels.values[j], runs[best_run[j]], float(best[j]),
                            via.get((int(best_run[j]), int(j)), ""))
                 for j in np.flatnonzero(best >= min_similarity)]
        found.sort(key=lambda m: (labels.order[m.column], -m.similarity))
        return Understanding(tuple(found), rewrite or None).narrowed(min_similarity, margin)

    @staticmethod
    def _has(labels: _Labels, column: str, values: Sequence[str], vids: np.ndarray) -> np.ndarray:
        """Whether each of ``vids`` has one of ``values`` in ``column`` (binary search in the sorted
        members of each value: no set operation over a large column)."""
        found = np.zeros(len(vids), bool)
        for value in values:
            members = labels.members.get((column, value))
            if members is not None and len(members):
                at = np.minimum(np.searchsorted(members, vids), len(members) - 1)
                found |= members[at] == vids
        return found

    def match_share(self, understanding: Understanding, vids: np.ndarray) -> np.ndarray:
        """For each of ``vids``: the share of the columns read in ``understanding`` whose value it has."""
        filters = understanding.filters
        labels = self._current()
        share = np.zeros(len(vids), np.float32)
        for column, values in filters.items():
            share += self._has(labels, column, values, vids)
        return share / max(1, len(filters))

    def having(self, understanding: Understanding) -> np.ndarray:
        """The vids (sorted) of the items that have a value read in every column read."""
        filters = understanding.filters
        labels = self._current()
        sizes = {c: sum(len(labels.members.get((c, v), ())) for v in values) for c, values in filters.items()}
        if not sizes:
            return np.zeros(0, np.int64)
        first = min(sizes, key=sizes.get)  # start from the smallest column, filter by the others
        vids = np.unique(np.concatenate([labels.members.get((first, v), np.zeros(0, np.int64))
                                         for v in filters[first]]))
        for column, values in filters.items():
            if column != first:
                vids = vids[self._has(labels, column, values, vids)]
        return vids

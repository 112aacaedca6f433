"""Spelling tolerance: a word nobody wrote is read as the nearest word somebody did.

The dictionary is the catalogue's own words (with how many items use each) and the shop
vocabulary's. Candidates are found as SymSpell does (Garbe 2012): every word is filed under the
forms left by deleting one of its letters, and a typed word's own one-letter deletions are looked
up there, so one insertion, deletion or substitution (and a swap of neighbours) is found without
comparing with every word. Each candidate's true distance (optimal string alignment: Damerau-
Levenshtein without repeated edits) must be within :func:`allowed_distance` of the word's length;
the nearest wins, then the most used. A word with no such neighbour may be the start of a longer
word (a *word piece*: "sweat" of "sweatshirts"): then the most used dictionary word it begins wins.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

MIN_LENGTH = 4  # shorter words are not corrected ("tee" is no typo of "tea")
MIN_PIECE = 5  # letters of the shortest word piece completed
MAX_GROWTH = 2.5  # a piece stands for a word at most this many times its length


def allowed_distance(word: str) -> int:
    """Edits allowed for a word: none under 4 letters, one up to 7, two from 8 on."""
    return 0 if len(word) < MIN_LENGTH else 1 if len(word) < 8 else 2


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def distance(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance of ``a`` and ``b``; ``limit + 1`` once it is over ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before, previous = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ca != cb))
            if before is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], before[j - 2] + 1)
        if min(row) > limit:
            return limit + 1
        before, previous = previous, row
    return previous[-1]


class Speller:
    """Corrects words against a dictionary of words and their counts (see the module docstring)."""

    def __init__(self, counts: Mapping[str, int], extra: Iterable[str] = ()):
        self.counts = dict(counts)
        for word in extra:
            self.counts.setdefault(word, 1)
        self._sorted = sorted(self.counts)
        self._by_delete: dict[str, list[str]] = {}
        for word in self.counts:
            if len(word) >= MIN_LENGTH - 1:
                for form in _deletes(word) | {word}:
                    self._by_delete.setdefault(form, []).append(word)

    def __contains__(self, word: str) -> bool:
        return word in self.counts

    def correct(self, word: str) -> str | None:
        """The dictionary word ``word`` was meant to be, or None (known, too short, or none near)."""
        limit = allowed_distance(word)
        if word in self.counts or not limit or not word.isalpha():
            return None
        candidates = {c for form in _deletes(word) | {word} for c in self._by_delete.get(form, ())}
        scored = [(d, -self.counts[c], c) for c in candidates if (d := distance(word, c, limit)) <= limit]
        return min(scored)[2] if scored else self._complete(word)

    def _complete(self, piece: str) -> str | None:
        """The most used dictionary word that ``piece`` begins (see the module docstring)."""
        if len(piece) < MIN_PIECE:
            return None
        start = bisect.bisect_left(self._sorted, piece)
        end = bisect.bisect_left(self._sorted, piece + "\uffff")
        found = [w for w in self._sorted[start:end] if len(w) <= MAX_GROWTH * len(piece)]
        return max(found, key=lambda w: (self.counts[w], -len(w))) if found else None

"""Expansions learned from the catalogue: title words that name a label value far above chance.

A *label column* has few distinct word values (articleType, baseColour, gender, ...; found from
the collection itself). For each word of the items' other text (their titles) used by at least
:data:`MIN_ITEMS` items, and each label value, ``precision`` is the share of the word's items that
have the value and ``lift`` that share over the value's share of all items. A word is kept for a
value when its lift is at least :data:`MIN_LIFT` and its precision at least a threshold chosen on
the validation split (:data:`DEFAULT_PRECISION`, ``benchmarks/text_vocabulary.py --choose-mined``):
"aviator" names Sunglasses, "dial" Watches. Only columns the titles speak of are mined (at least
:data:`MIN_NAMED` of the items' titles name their value: articleType, baseColour, gender; not
season or masterCategory). Words that are themselves part of some label value,
stop words and words of fewer than 3 letters are left out, so a mined entry never leads into
another (no cycles). They are one-way entries ``word => value``, used only for words the shipped
vocabulary and the collection's own synonyms do not know.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vestis.data.vocabulary import Entry, singular, tokens

MAX_VALUES = 300  # a column with more distinct values is not a label column (titles, ids)
MIN_ITEMS = 5  # items a word must be in to be mined
MIN_LIFT = 2.0  # how far above chance a word must name a value
MIN_NAMED = 0.25  # share of the items whose titles name their value of a column, for it to be mined
FLOOR = 0.5  # the lowest precision kept in the cache (the threshold is applied when the words are used)
LISTED = 0.9  # the least precision of the words `vestis text info` lists when none are used
# None: no mined word is used. Chosen on the validation split of Fashion Product Images (mean hybrid
# P@10 of the label queries 0.830 with none, 0.821 at >= 0.9 or 1.0, 0.803 at >= 0.6: BENCHMARKS.md)
DEFAULT_PRECISION: float | None = None


def label_columns(column_values: Mapping[str, Sequence[tuple[str, int]]], n_items: int,
                  is_word: Any, skip: Iterable[str] = ()) -> dict[str, list[str]]:
    """Each label column with its word values: fewer distinct values than half the items and no
    more than MAX_VALUES, at least two of them words (``column_values`` as the store's
    ``metadata_columns`` gives them, asked for MAX_VALUES + 1)."""
    skip = set(skip)
    out = {}
    for column, counts in column_values.items():
        words = [v for v, _ in counts if is_word(v)]
        if column in skip or len(counts) > MAX_VALUES or len(words) < 2 or 2 * len(counts) > n_items:
            continue
        out[column] = sorted(words)
    return out


@dataclass(frozen=True)
class Mined:
    word: str
    column: str
    value: str
    items: int  # items with the word
    precision: float  # share of them having the value

    def as_list(self) -> list[Any]:
        return [self.word, self.column, self.value, self.items, round(self.precision, 3)]


def mine(items: Iterable[Mapping[str, Any]], columns: Mapping[str, Sequence[str]], stop: frozenset[str],
         floor: float = FLOOR) -> list[Mined]:
    """The (word, label value) pairs of the module docstring with precision >= ``floor``, best first."""
    labels = {(c, v) for c, values in columns.items() for v in values}
    named = {(c, v): {w for t in tokens(v) for w in (t, singular(t))} for c, v in labels}
    label_words = set().union(*named.values())
    words: Counter[str] = Counter()
    pairs: Counter[tuple[str, str, str]] = Counter()
    values: Counter[tuple[str, str]] = Counter()
    said: Counter[str] = Counter()  # items whose text names their value of a column
    n = 0
    for metadata in items:
        n += 1
        own = [(c, str(metadata[c])) for c in columns if (c, str(metadata.get(c))) in labels]
        values.update(own)
        text = {w for w in tokens(" ".join(str(v) for c, v in metadata.items()
                                           if c not in columns and isinstance(v, str)))}
        said.update(c for c, v in own if named[c, v] & text)
        for word in {w for w in text if len(w) >= 3 and w.isalpha() and w not in stop and w not in label_words}:
            words[word] += 1
            pairs.update((word, c, v) for c, v in own)
    out = []
    for (word, column, value), count in pairs.items():
        if said[column] < MIN_NAMED * n:  # a column the titles do not speak of (season, masterCategory)
            continue
        total = words[word]
        precision = count / total
        if total >= MIN_ITEMS and precision >= floor and precision * n >= MIN_LIFT * values[column, value]:
            out.append(Mined(word, column, value, total, precision))
    out.sort(key=lambda m: (-m.precision, -m.items, m.word))
    return out


def mined_entries(mined: Sequence[Mined], precision: float | None) -> list[Entry]:
    """One-way entries ``word => value`` of the mined pairs at or above ``precision`` (None: none)."""
    by_word: dict[str, list[str]] = {}
    for m in mined:
        if precision is not None and m.precision >= precision:
            by_word.setdefault(m.word, []).append(" ".join(tokens(m.value)))
    return [Entry((word,), tuple(dict.fromkeys(values)), "mined") for word, values in sorted(by_word.items())]

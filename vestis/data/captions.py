"""Texts of catalogue items: a title column, or captions made from label columns by templates.

A template is a Python format string over the item's metadata, e.g. ``"{gender} {baseColour}
{articleType}"``; an item lacking one of its fields gets no caption from that template (never a
caption with a hole in it). Used to pair items with text for the joint text-image space and to
feed the keyword index. For training, :func:`substitute_synonyms` writes a caption in a shopper's
words from the vocabulary (:mod:`vestis.data.vocabulary`), so the joint space learns them too.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from typing import Any

from vestis.data.vocabulary import Entry, singular, tokens
from vestis.errors import VestisError


def template_fields(template: str) -> list[str]:
    """The metadata fields a template names; a malformed template is a clear error."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise VestisError(f"caption template {template!r} is malformed: {e}") from e
    if any(not f or not f.isidentifier() for f in fields):
        raise VestisError(f"caption template {template!r}: every {{field}} must name a metadata column")
    return fields


def _value(metadata: Mapping[str, Any], field: str) -> str | None:
    value = metadata.get(field)
    text = "" if value is None else " ".join(str(value).split())
    return text or None


def item_texts(metadata: Mapping[str, Any], column: str | None = None,
               templates: Sequence[str] = ()) -> list[str]:
    """The item's texts: its ``column`` value (when present) then one caption per template whose
    fields it all has; duplicates dropped, order kept."""
    out = []
    if column is not None and (title := _value(metadata, column)):
        out.append(title)
    for template in templates:
        fields = template_fields(template)
        values = {f: _value(metadata, f) for f in fields}
        if all(values.values()):
            out.append(" ".join(template.format_map(values).split()))
    return list(dict.fromkeys(out))


def synonym_choices(entries: Sequence[Entry]) -> dict[str, tuple[str, ...]]:
    """Each phrase a caption's words may be replaced by, with the phrases that may stand for it: the
    other words of its two-way groups and, when it is the target of one-way entries, their left
    sides ("sneakers" may become "kicks", never back: "kicks => sneakers" says kicks finds
    sneakers, and a caption teaches what finds it)."""
    out: dict[str, list[str]] = {}
    for entry in entries:
        pairs = ([(w, o) for w in entry.words for o in entry.words if o != w] if entry.two_way
                 else [(t, w) for t in entry.targets for w in entry.words])
        for word, other in pairs:
            if singular(other) != singular(word):  # a plural is not a synonym to learn
                out.setdefault(word, []).append(other)
    return {w: tuple(dict.fromkeys(o)) for w, o in out.items()}


def substitute_synonyms(text: str, choices: Mapping[str, Sequence[str]], rng: random.Random,
                        rate: float = 1.0) -> str:
    """``text`` with each phrase that ``choices`` knows (longest first, left to right) replaced,
    with probability ``rate``, by one of its synonyms drawn from ``rng``; the text unchanged (the
    same string) when nothing was replaced, else its words lower-cased and joined by spaces."""
    words, out, changed, i = tokens(text), [], False, 0
    longest = max((len(p.split()) for p in choices), default=1)
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            phrase = " ".join(words[i:i + n])
            if phrase in choices:
                break
        else:
            out.append(words[i])
            i += 1
            continue
        if rng.random() < rate:
            out.append(rng.choice(list(choices[phrase])))
            changed = True
        else:
            out.append(phrase)
        i += n
    return " ".join(out) if changed else text

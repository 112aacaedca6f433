"""Texts of catalogue items: a title column, or captions made from label columns by templates.

A template is a Python format string over the item's metadata, e.g. ``"{gender} {baseColour}
{articleType}"``; an item lacking one of its fields gets no caption from that template (never a
caption with a hole in it). Used to pair items with text for the joint text-image space and to
feed the keyword index.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

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

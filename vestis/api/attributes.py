"""Parsing of the ``attrs`` request field (RPF: ``"sleeve length; collar design"``).

This is the one place the API turns ``attrs`` into attribute names. A collection offers no
attributes until attribute indexes exist (a later layer); :meth:`Service.attribute_names` is where
they will be listed, and every route validates ``attrs`` through :func:`parse_attrs`.
"""

from __future__ import annotations

from collections.abc import Sequence

from vestis.api.errors import InvalidRequestError


def parse_attrs(raw: str | Sequence[str] | None, valid: Sequence[str]) -> list[str]:
    """Attribute names from ``"a; b"`` or ``["a", "b"]`` (blank entries ignored), in order, each
    checked against ``valid``; raises InvalidRequestError (422) naming the valid ones."""
    parts = raw.split(";") if isinstance(raw, str) else list(raw or [])
    names = list(dict.fromkeys(p.strip() for p in parts if p and p.strip()))
    if not names:
        return []
    if not valid:
        raise InvalidRequestError("attribute search is not available for this collection; valid attributes: []")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise InvalidRequestError(
            f"unknown attribute(s) {', '.join(map(repr, unknown))}; valid attributes: {list(valid)}"
        )
    return names

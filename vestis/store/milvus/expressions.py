"""Milvus boolean expressions: metadata filters and id lists, with every value escaped.

A filter key with several values is one ``in`` list (``labels["colour"] in ["Blue", "Navy"]``):
one set lookup per row, where a chain of ``or`` comparisons costs one comparison per row and
value. Milvus Lite's parser takes ``in`` on plain fields only, so there the chain remains; the
collection first drops the values no item holds (:meth:`MilvusCollection.expression`), and the
number of values a request may give is bounded (:data:`vestis.search.filters.MAX_FILTER_VALUES`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vestis.errors import VestisError


def literal(text: str) -> str:
    """``text`` as a Milvus expression string literal (double quotes; backslash, quote, newline,
    tab and carriage return escaped). Other control characters cannot be written and are refused."""
    if any(ord(c) < 32 and c not in "\n\r\t" for c in text):
        raise VestisError(f"filter value {text!r} holds a control character")
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def vids_in(vids: Iterable[int], negate: bool = False) -> str:
    """``vid in [...]`` (or ``not in``) over integer vids."""
    return f"vid {'not in' if negate else 'in'} [{', '.join(str(int(v)) for v in vids)}]"


def ids_in(ids: Iterable[str]) -> str:
    """``id in [...]`` over item ids (escaped)."""
    return f"id in [{', '.join(literal(i) for i in ids)}]"


def filter_expression(filters: dict[str, Sequence[str] | str] | None, exclude: Sequence[int] = (),
                      json_in: bool = True) -> str:
    """The Milvus boolean expression of metadata filters (a key equals one of its values; every key
    must match), and of vids to leave out. Empty when there is nothing to filter. ``json_in``: the
    server takes ``in`` on a JSON path (Milvus does, Milvus Lite does not: ``or`` comparisons)."""
    clauses = []
    for key, values in (filters or {}).items():
        values = [values] if isinstance(values, str) else list(values)
        if not values:
            continue
        field = f"labels[{literal(str(key))}]"
        if json_in:
            clauses.append(f"{field} in [{', '.join(literal(str(v)) for v in values)}]")
        else:
            clauses.append("(" + " or ".join(f"{field} == {literal(str(v))}" for v in values) + ")")
    if exclude:
        clauses.append(vids_in(exclude, negate=True))
    return " and ".join(clauses)

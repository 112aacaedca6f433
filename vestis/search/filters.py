"""Metadata filters as the CLI and the API take them, checked the same way for both."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from vestis.errors import VestisError


MAX_FILTER_VALUES = 1000  # values one request's filters may list, all keys together


class FilterError(VestisError):
    """A filter names a metadata column the collection does not have, or lists too many values."""


def check_filters(filters: Mapping[str, Sequence[str] | str], columns: Iterable[str]) -> dict[str, list[str]]:
    """``filters`` with every value list made a list; a column outside ``columns`` (the collection's
    metadata keys) is refused with the valid ones listed, so a typo never silently matches nothing,
    and so are more than MAX_FILTER_VALUES values (each costs every store work per query)."""
    checked = {key: [values] if isinstance(values, str) else list(values) for key, values in filters.items()}
    if (given := sum(map(len, checked.values()))) > MAX_FILTER_VALUES:
        raise FilterError(f"filters list {given:,} values; at most {MAX_FILTER_VALUES:,} are allowed per search")
    valid = set(columns)
    unknown = [key for key in filters if key not in valid]
    if unknown:
        raise FilterError(f"unknown filter column(s) {', '.join(map(repr, unknown))}; valid columns: {sorted(valid)}")
    return checked

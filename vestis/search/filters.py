"""Metadata filters as the CLI and the API take them, checked the same way for both."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from vestis.errors import VestisError


class FilterError(VestisError):
    """A filter names a metadata column the collection does not have."""


def check_filters(filters: Mapping[str, Sequence[str] | str], columns: Iterable[str]) -> dict[str, list[str]]:
    """``filters`` with every value list made a list; a column outside ``columns`` (the collection's
    metadata keys) is refused with the valid ones listed, so a typo never silently matches nothing."""
    valid = set(columns)
    unknown = [key for key in filters if key not in valid]
    if unknown:
        raise FilterError(f"unknown filter column(s) {', '.join(map(repr, unknown))}; valid columns: {sorted(valid)}")
    return {key: [values] if isinstance(values, str) else list(values) for key, values in filters.items()}

"""CSV label tables read row by row: a row the csv module cannot read (a field over the size
limit, a stray quote or newline) is logged and skipped, and reading goes on with the next row."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from typing import TextIO

log = logging.getLogger(__name__)

# Longest field read, in characters: long free-text descriptions fit (the csv module's default,
# 131,072, does not always); a longer one is refused with its row rather than filling memory.
MAX_FIELD_CHARS = 4 * 1024 * 1024


def csv_rows(f: TextIO, name: str) -> Iterator[list[str]]:
    """The rows of the CSV ``f`` (called ``name`` in messages), skipping unreadable ones."""
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(f)
    skipped: list[str] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            skipped.append(f"line {reader.line_num}: {e}")
            continue
        yield row
    if skipped:
        log.warning("%s: %d row(s) could not be read and are skipped (%s)", name, len(skipped),
                    "; ".join(skipped[:5]))


def csv_dicts(f: TextIO, name: str) -> tuple[list[str], Iterator[dict[str, str]]]:
    """The header of the CSV ``f`` and its rows as ``{column: cell}`` (cells missing at the end of a
    short row are left out), skipping unreadable rows as :func:`csv_rows` does."""
    rows = csv_rows(f, name)
    header = next(rows, [])
    return header, (dict(zip(header, row)) for row in rows)

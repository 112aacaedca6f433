"""Reader for a plain folder (or zip) of images, with an optional metadata table.

The metadata table is a CSV or JSONL file with an ``id`` column and/or a path column
(``path``, ``image``, ``file`` or ``filename``, relative to the folder; a bare file name, with or
without its extension, matches the one image of that name anywhere below) plus any label columns.
It is found automatically as ``metadata.csv``, ``labels.csv`` or ``metadata.jsonl`` at the top of
the folder, or given explicitly. Every image is an item, with or without a metadata row; rows
naming no image, or a bare name that several images share, are logged and skipped.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from vestis.data.base import Catalogue
from vestis.data.images import is_image_name
from vestis.data.sources import Container, iter_items, open_container, open_table
from vestis.data.tables import csv_dicts
from vestis.errors import CatalogueError

log = logging.getLogger(__name__)

METADATA_NAMES = ("metadata.csv", "labels.csv", "metadata.jsonl")
ID_COLUMN = "id"
PATH_COLUMNS = ("path", "image", "file", "filename")


def _table_columns(f: TextIO, name: str) -> list[str]:
    """The columns of a CSV (its header) or JSONL table (every key of every object, in order)."""
    if not name.lower().endswith(".jsonl"):
        return csv_dicts(f, name)[0]
    columns: dict[str, None] = {}
    for row in _jsonl_rows(f, name):
        columns.update(dict.fromkeys(row))
    return list(columns)


def _table_rows(f: TextIO, name: str) -> Iterator[dict[str, Any]]:
    """The rows of a CSV or JSONL table, one at a time."""
    if name.lower().endswith(".jsonl"):
        return _jsonl_rows(f, name)
    return csv_dicts(f, name)[1]


def _jsonl_rows(f: TextIO, name: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CatalogueError(f"{name}, line {number}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise CatalogueError(f"{name}, line {number}: expected a JSON object per line")
        yield row


def _label(value: Any) -> str | None:
    """A label value as a string (as written for CSV cells); None for an empty or null value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "|".join(str(v) for v in value if _label(v) is not None) or None
    return json.dumps(value)


def _without_suffix(name: str) -> str:
    return str(PurePosixPath(name).with_suffix(""))


def _match_rows(rows: Iterable[dict[str, Any]], id_col: str | None, path_col: str | None,
                images: list[str], table: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Map image name -> (item id, row) for rows that name an existing image, read one at a time
    (rows naming no image are counted and dropped, so a long table costs no memory).

    A row names an image by its path relative to the folder (with or without extension) or, with
    no ``/``, by a file name or stem that exactly one image has; a name several images share is
    reported as ambiguous, never guessed. The item id is the row's id, else the image's relative
    path without extension: it does not depend on which other images the folder holds."""
    by_path: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for n in images:
        by_path.setdefault(n, n)
        by_path.setdefault(_without_suffix(n), n)
        path = PurePosixPath(n)
        for name in dict.fromkeys((path.name, path.stem)):
            by_name.setdefault(name, []).append(n)

    matched: dict[str, tuple[str, dict[str, Any]]] = {}
    missing = _Skipped()
    ambiguous = _Skipped()
    for row in rows:
        item_id = _label(row.get(id_col)) if id_col else None
        key = (_label(row.get(path_col)) if path_col else None) or item_id
        if key is None:
            missing.add("(blank row)")
            continue
        key = key.replace("\\", "/").removeprefix("./")
        image = by_path.get(key)
        if image is None and "/" not in key:
            candidates = by_name.get(key, [])
            if len(candidates) > 1:
                ambiguous.add(f"{key} ({' or '.join(candidates[:3])}{' or ...' if len(candidates) > 3 else ''})")
                continue
            image = candidates[0] if candidates else None
        if image is None:
            missing.add(key if item_id in (None, key) else f"{item_id} ({key})")
        elif image in matched:
            log.warning("%s: image %s has several metadata rows; keeping the first", table, image)
        else:
            matched[image] = (item_id or _without_suffix(image), row)
    if missing.count:
        log.warning("%s: %d metadata rows name no image in the folder and are skipped (first: %s)",
                    table, missing.count, ", ".join(missing.first))
    if ambiguous.count:
        log.warning("%s: %d metadata rows name a file that several images share, so they are ambiguous and "
                    "skipped; name the image by its path in the folder instead (first: %s)",
                    table, ambiguous.count, "; ".join(ambiguous.first))
    return matched


class _Skipped:
    """How many rows were skipped for one reason, and the first few, for the warning."""

    def __init__(self, keep: int = 5) -> None:
        self.count = 0
        self.first: list[str] = []
        self._keep = keep

    def add(self, what: str) -> None:
        self.count += 1
        if len(self.first) < self._keep:
            self.first.append(what)


def _open_table(container: Container, metadata: str | Path | None) -> tuple[str, Callable[[], TextIO]] | None:
    """(name, opener) of the metadata table given or found in the folder; None without one."""
    if metadata is not None:
        path = Path(metadata)
        return str(path), functools.partial(open_table, path)
    for name in METADATA_NAMES:
        if container.exists(name):
            return f"{container.root}/{name}", functools.partial(container.open_text, name)
    return None


def _one_column(columns: list[str], names: Sequence[str], table: str) -> str | None:
    """The column of ``columns`` called one of ``names`` (case-insensitive, first name first);
    a table that has it twice is refused, since either could be meant."""
    for name in names:
        found = [c for c in columns if c.lower() == name]
        if len(found) > 1:
            raise CatalogueError(f"{table}: the column {name!r} appears {len(found)} times "
                                 f"({', '.join(map(repr, found))}); keep one")
        if found:
            return found[0]
    return None


def read_folder(source: str | Path, *, metadata: str | Path | None = None) -> Catalogue:
    """Every JPEG/PNG/WebP under ``source`` (a folder or zip), recursively, sorted by path.

    Item id: the metadata ``id`` if there is one, else the image path relative to the folder,
    without extension. Metadata: the row's label columns, empty cells left out.
    """
    container = open_container(source)
    images = [n for n in container.files() if is_image_name(n)]
    labels: list[str] = []
    matched: dict[str, tuple[str, dict[str, Any]]] = {}
    found = _open_table(container, metadata)
    if found is not None:
        table, open_text = found
        with open_text() as f:
            columns = _table_columns(f, table)
        id_col = _one_column(columns, [ID_COLUMN], table)
        path_col = _one_column(columns, PATH_COLUMNS, table)
        if id_col is None and path_col is None:
            raise CatalogueError(f"{table}: the metadata table needs an 'id' column or a path column "
                                 f"({', '.join(PATH_COLUMNS)}); it has {', '.join(columns) or 'none'}")
        labels = [c for c in columns if c not in (id_col, path_col)]
        with open_text() as f:
            matched = _match_rows(_table_rows(f, table), id_col, path_col, images, table)

    entries = []
    for name in images:
        item_id, row = matched.get(name, (_without_suffix(name), {}))
        entries.append((item_id, name, {c: v for c in labels if (v := _label(row.get(c))) is not None}))
    items = list(iter_items(container, entries, "the folder"))
    return Catalogue("folder", container.root, labels, items.__iter__, len(items))

"""Reader for a plain folder (or zip) of images, with an optional metadata table.

The metadata table is a CSV or JSONL file with an ``id`` column and/or a path column
(``path``, ``image``, ``file`` or ``filename``, relative to the folder; a bare file name, with or
without its extension, matches the one image of that name anywhere below) plus any label columns.
It is found automatically as ``metadata.csv``, ``labels.csv`` or ``metadata.jsonl`` at the top of
the folder, or given explicitly. Every image is an item, with or without a metadata row; rows
naming no image are logged and skipped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from vestis.data.base import Catalogue
from vestis.data.images import is_image_name
from vestis.data.sources import Container, iter_items, open_container
from vestis.data.tables import csv_dicts
from vestis.errors import CatalogueError

log = logging.getLogger(__name__)

METADATA_NAMES = ("metadata.csv", "labels.csv", "metadata.jsonl")
ID_COLUMN = "id"
PATH_COLUMNS = ("path", "image", "file", "filename")


def _read_table(f: TextIO, name: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of a CSV or JSONL (one JSON object per line) table."""
    if not name.lower().endswith(".jsonl"):
        header, rows = csv_dicts(f, name)
        return header, list(rows)
    rows, columns = [], {}
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CatalogueError(f"{name}, line {number}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise CatalogueError(f"{name}, line {number}: expected a JSON object per line")
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return list(columns), rows


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


def _match_rows(rows: list[dict[str, Any]], id_col: str | None, path_col: str | None,
                images: list[str], table: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Map image name -> (item id, row) for rows that name an existing image."""
    by_name = {n: n for n in images}
    by_stem: dict[str, list[str]] = {}
    for n in images:
        by_name.setdefault(_without_suffix(n), n)
        by_stem.setdefault(PurePosixPath(n).stem, []).append(n)
        by_stem.setdefault(PurePosixPath(n).name, []).append(n)

    def unique(stem: str) -> str | None:
        """The one image whose file name (with or without extension) is ``stem``, if just one."""
        found = by_stem.get(stem, [])
        return found[0] if len(found) == 1 else None

    matched: dict[str, tuple[str, dict[str, Any]]] = {}
    missing = []
    for row in rows:
        item_id = _label(row.get(id_col)) if id_col else None
        if path_col and _label(row.get(path_col)):
            key = str(row[path_col]).replace("\\", "/").removeprefix("./")
            image = by_name.get(key) or (unique(key) if "/" not in key else None)
            item_id = item_id or _without_suffix(key)
        elif item_id:
            image = by_name.get(item_id) or unique(item_id)
        else:
            image = None
        if image is None:
            missing.append(item_id or "(blank row)")
        elif image in matched:
            log.warning("%s: image %s has several metadata rows; keeping the first", table, image)
        else:
            matched[image] = (item_id, row)
    if missing:
        log.warning("%s: %d metadata rows name no image in the folder and are skipped (first: %s)",
                    table, len(missing), ", ".join(missing[:5]))
    return matched


def _metadata_table(container: Container, metadata: str | Path | None) -> tuple[str, list[str], list[dict]]:
    if metadata is not None:
        path = Path(metadata)
        try:
            with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
                return str(path), *_read_table(f, path.name)
        except OSError as e:
            raise CatalogueError(f"{path}: cannot read the metadata table ({e.strerror or e})") from None
    for name in METADATA_NAMES:
        if container.exists(name):
            with container.open_text(name) as f:
                return f"{container.root}/{name}", *_read_table(f, name)
    return "", [], []


def read_folder(source: str | Path, *, metadata: str | Path | None = None) -> Catalogue:
    """Every JPEG/PNG/WebP under ``source`` (a folder or zip), recursively, sorted by path.

    Item id: the metadata ``id`` if there is one, else the image path relative to the folder,
    without extension. Metadata: the row's label columns, empty cells left out.
    """
    container = open_container(source)
    images = [n for n in container.files() if is_image_name(n)]
    table, columns, rows = _metadata_table(container, metadata)
    lower = {c.lower(): c for c in columns}
    id_col = lower.get(ID_COLUMN)
    path_col = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
    if table and id_col is None and path_col is None:
        raise CatalogueError(f"{table}: the metadata table needs an 'id' column or a path column "
                             f"({', '.join(PATH_COLUMNS)}); it has {', '.join(columns) or 'none'}")
    labels = [c for c in columns if c not in (id_col, path_col)]
    matched = _match_rows(rows, id_col, path_col, images, table)

    entries = []
    for name in images:
        item_id, row = matched.get(name, (_without_suffix(name), {}))
        entries.append((item_id, name, {c: v for c in labels if (v := _label(row.get(c))) is not None}))
    items = list(iter_items(container, entries, "the folder"))
    return Catalogue("folder", container.root, labels, items.__iter__, len(items))

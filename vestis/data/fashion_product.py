"""Reader for Fashion Product Images (Kaggle, Param Aggarwal): ``styles.csv`` + ``images/<id>.jpg``.

Works on the unpacked folder or directly on the zip. ``styles.csv`` in the Kaggle data has a few
rows with unquoted commas in ``productDisplayName``; the extra fields are joined back into that
last column. Rows whose image is missing are logged and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from vestis.data.base import Catalogue
from vestis.data.sources import iter_items, open_container
from vestis.data.tables import csv_rows
from vestis.errors import CatalogueError

STYLES = "styles.csv"


def read_fashion_product(source: str | Path) -> Catalogue:
    """Items in ``styles.csv`` order; id = product id, metadata = the other columns (empty cells
    left out, ``year`` as a whole number such as ``"2016"``)."""
    container = open_container(source)
    styles = container.find(STYLES)
    if styles is None:
        raise CatalogueError(f"{container.root}: no {STYLES} found (Fashion Product Images layout: "
                             f"{STYLES} next to an images/ folder)")
    prefix = styles[: -len(STYLES)]
    with container.open_text(styles) as f:
        reader = csv_rows(f, f"{container.root}/{styles}")
        header = [h.strip() for h in next(reader, [])]
        if "id" not in header:
            raise CatalogueError(f"{container.root}/{styles}: no 'id' column (header: {', '.join(header)})")
        items = list(iter_items(container, _entries(reader, header, prefix), STYLES))
    columns = [c for c in header if c != "id"]
    return Catalogue("fashion-product", container.root, columns, items.__iter__, len(items))


def _entries(rows: Iterator[list[str]], header: list[str], prefix: str) -> Iterator[tuple[str, str, dict]]:
    """(id, image name, metadata) per styles.csv row."""
    width = len(header)
    for row in rows:
        if len(row) > width:
            row = [*row[: width - 1], ",".join(row[width - 1:])]
        record = {k: v.strip() for k, v in zip(header, row) if v.strip()}
        item_id = record.pop("id", "")
        if not item_id:
            continue
        if "year" in record:
            record["year"] = re.sub(r"^(\d+)\.0*$", r"\1", record["year"])
        yield item_id, f"{prefix}images/{item_id}.jpg", record

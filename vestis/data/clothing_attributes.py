"""Reader for the Clothing Attribute Dataset (Chen, Gallagher, Girod, ECCV 2012).

``labels.csv``: an ``image`` column (``images/000001.jpg``) and 26 attributes coded 1/2 (binary:
1 = no, 2 = yes) or 1..n (multi-valued); an empty cell means the annotators did not agree, and
the attribute is then left out of the item's metadata. Values become readable strings, and two
attributes are derived: ``pattern`` (when exactly one ``pattern_*`` flag is yes) and ``colour``
(when exactly one of the 11 colour flags, ``many_colors`` included, is yes).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path, PurePosixPath

from vestis.data.base import Catalogue
from vestis.data.sources import iter_items, open_container
from vestis.data.tables import csv_dicts
from vestis.errors import CatalogueError

log = logging.getLogger(__name__)

LABELS = "labels.csv"
IMAGE_COLUMN = "image"
BINARY = ("no", "yes")
VALUES: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female"),
    "skin_exposure": ("low", "high"),
    "sleevelength": ("none", "short", "long"),
    "neckline": ("v-shape", "round", "other"),
    "category": ("shirt", "sweater", "t-shirt", "outerwear", "suit", "tank top", "dress"),
}
"""Value names of the non-yes/no attributes, for codes 1, 2, ...; every other attribute is no/yes."""
PATTERNS = ("solid", "floral", "spot", "graphics", "plaid", "stripe")
COLOURS = ("black", "blue", "brown", "cyan", "gray", "green", "many_colors", "purple", "red", "white",
           "yellow")


def _value(attribute: str, cell: str) -> str | None:
    """The readable value of a coded cell ("2.0" -> "yes"); None when empty or not a valid code."""
    if not cell.strip():
        return None
    names = VALUES.get(attribute, BINARY)
    try:
        code = float(cell)
    except ValueError:
        code = math.nan
    if code.is_integer() and 1 <= code <= len(names):
        return names[int(code) - 1]
    log.warning("%s: attribute %s has an unknown code %r; left out", LABELS, attribute, cell)
    return None


def _derived(metadata: dict[str, str]) -> dict[str, str]:
    derived = {}
    patterns = [p for p in PATTERNS if metadata.get(f"pattern_{p}") == "yes"]
    if len(patterns) == 1:
        derived["pattern"] = patterns[0]
    colours = [c for c in COLOURS if metadata.get(c) == "yes"]
    if len(colours) == 1:
        derived["colour"] = colours[0]
    return derived


def read_clothing_attributes(source: str | Path) -> Catalogue:
    """Items in ``labels.csv`` order; id = image file stem (``"000001"``)."""
    container = open_container(source)
    labels = container.find(LABELS)
    if labels is None:
        raise CatalogueError(f"{container.root}: no {LABELS} found (Clothing Attribute Dataset layout)")
    prefix = labels[: -len(LABELS)]
    with container.open_text(labels) as f:
        header, rows = csv_dicts(f, f"{container.root}/{labels}")
        if IMAGE_COLUMN not in header:
            raise CatalogueError(f"{container.root}/{labels}: no '{IMAGE_COLUMN}' column")
        attributes = [c for c in header if c != IMAGE_COLUMN]
        entries = []
        for row in rows:
            image = (row.get(IMAGE_COLUMN) or "").strip()
            if not image:
                continue
            name = prefix + image
            if not container.exists(name):  # a label naming the file only, without images/
                name = f"{prefix}images/{image}"
            metadata = {a: v for a in attributes if (v := _value(a, row.get(a) or "")) is not None}
            metadata.update(_derived(metadata))
            entries.append((PurePosixPath(image).stem, name, metadata))
    items = list(iter_items(container, entries, LABELS))
    columns = [*attributes, "pattern", "colour"]
    return Catalogue("clothing-attributes", container.root, columns, items.__iter__, len(items))

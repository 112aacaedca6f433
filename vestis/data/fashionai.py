"""Reader for the FashionAI attribute dataset (Alibaba, FashionAI Global Challenge 2018).

``Annotations/label.csv`` has no header; each row is ``image path,attribute key,label string``
where the label string has one letter per value of that attribute: ``y`` (yes), ``n`` (no) or
``m`` (maybe). The value is the position of the single ``y``; ``m`` is not counted as positive, and
a row without exactly one ``y`` gives no value. An image listed under several keys merges them.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from vestis.data.base import Catalogue
from vestis.data.sources import Container, iter_items, open_container
from vestis.data.tables import csv_rows
from vestis.errors import CatalogueError

LABELS = "label.csv"
SUFFIX = "_labels"
VALUE_NAMES: dict[str, tuple[str, ...]] = {
    "skirt_length": ("Invisible", "Short Length", "Knee Length", "Midi Length", "Ankle Length", "Floor Length"),
    "sleeve_length": ("Invisible", "Sleeveless", "Cup Sleeves", "Short Sleeves", "Elbow Sleeves",
                      "3/4 Sleeves", "Wrist Length", "Long Sleeves", "Extra Long Sleeves"),
    "coat_length": ("Invisible", "High Waist Length", "Regular Length", "Long Length", "Micro Length",
                    "Knee Length", "Midi Length", "Ankle&Floor Length"),
    "pant_length": ("Invisible", "Short Pant", "Mid Length", "3/4 Length", "Cropped Pant", "Full Length"),
    "collar_design": ("Invisible", "Shirt Collar", "Peter Pan", "Puritan Collar", "Rib Collar"),
    "lapel_design": ("Invisible", "Notched", "Collarless", "Shawl Collar", "Plus Size Shawl"),
    "neckline_design": ("Invisible", "Strapless Neck", "Deep V Neckline", "Straight Neck", "V Neckline",
                        "Square Neckline", "Off Shoulder", "Round Neckline", "Sweat Heart Neck",
                        "One Shoulder Neckline"),
    "neck_design": ("Invisible", "Turtle Neck", "Ruffle Semi-High Collar", "Low Turtle Neck", "Draped Collar"),
}
"""Value names per attribute (metadata key), by value index, as in the challenge's dataset description."""


def find_labels(container: Container) -> str | None:
    """The ``Annotations/label.csv`` of a FashionAI dataset, if the container has one."""
    found = container.find(LABELS)
    return found if found is not None and PurePosixPath(found).parent.name == "Annotations" else None


def _value(labels: str) -> str | None:
    """The index of the single ``y`` in a label string (``"nnynn"`` -> ``"2"``), else None."""
    return str(labels.index("y")) if labels.count("y") == 1 else None


def read_fashionai(source: str | Path) -> Catalogue:
    """Items in ``label.csv`` order; id = image path without ``Images/`` and extension.

    Metadata: ``{attribute: value index}``, e.g. ``{"sleeve_length": "2"}`` (see :data:`VALUE_NAMES`).
    """
    container = open_container(source)
    found = find_labels(container)
    if found is None:
        raise CatalogueError(f"{container.root}: no Annotations/{LABELS} found (FashionAI attributes layout)")
    parent = PurePosixPath(found).parent.parent
    base = "" if str(parent) == "." else f"{parent}/"
    images: dict[str, dict[str, str]] = {}
    with container.open_text(found) as f:
        for number, row in enumerate(csv_rows(f, found), 1):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < 3:
                raise CatalogueError(f"{found}, line {number}: expected path,attribute,labels")
            path, key, labels = (cell.strip() for cell in row[:3])
            meta = images.setdefault(path, {})
            if (value := _value(labels)) is not None:
                meta[key.removesuffix(SUFFIX)] = value
    entries = ((str(PurePosixPath(path.removeprefix("Images/")).with_suffix("")), base + path, meta)
               for path, meta in images.items())
    items = list(iter_items(container, entries, LABELS))
    seen = {key for item in items for key in item.metadata}
    columns = [a for a in VALUE_NAMES if a in seen] + sorted(seen - VALUE_NAMES.keys())
    return Catalogue("fashionai", container.root, columns, items.__iter__, len(items))

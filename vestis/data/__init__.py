"""Catalogue readers: turn a folder, zip or known fashion dataset into a :class:`Catalogue`.

``open_catalogue(source)`` detects the format from the files present; ``READERS`` maps each
format name to its reader, which ``open_catalogue(source, format, **options)`` calls directly.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from pathlib import Path

from vestis.data.base import Catalogue, CatalogueItem
from vestis.data.clothing_attributes import read_clothing_attributes
from vestis.data.deepfashion import find_inshop_partition, read_deepfashion, read_deepfashion_inshop
from vestis.data.fashion_mnist import DEBIAN_PATH, is_fashion_mnist_folder, read_fashion_mnist
from vestis.data.fashion_product import read_fashion_product
from vestis.data.fashionai import find_labels, read_fashionai
from vestis.data.folder import read_folder
from vestis.data.images import IMAGE_EXTENSIONS, decode_image
from vestis.data.sources import Container, idx_uri, open_container, read_source, zip_uri
from vestis.data.tables import csv_rows
from vestis.errors import CatalogueError

__all__ = [
    "IMAGE_EXTENSIONS",
    "READERS",
    "Catalogue",
    "CatalogueItem",
    "decode_image",
    "detect_format",
    "idx_uri",
    "open_catalogue",
    "read_source",
    "zip_uri",
]

READERS: dict[str, Callable[..., Catalogue]] = {
    "folder": read_folder,
    "fashion-product": read_fashion_product,
    "clothing-attributes": read_clothing_attributes,
    "fashion-mnist": read_fashion_mnist,
    "deepfashion": read_deepfashion,
    "deepfashion-inshop": read_deepfashion_inshop,
    "fashionai": read_fashionai,
}


def _is_clothing_attributes(container: Container) -> bool:
    labels = container.find("labels.csv")
    if labels is None:
        return False
    with container.open_text(labels) as f:
        header = next(csv_rows(f, labels), [])
    return "image" in header and "sleevelength" in header


def detect_format(source: str | Path) -> str:
    """The format name of a folder or zip, from the files it holds (``folder`` when none matches)."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() != ".zip" and is_fashion_mnist_folder(path.parent):
        return "fashion-mnist"
    if path.is_dir() and is_fashion_mnist_folder(path):
        return "fashion-mnist"
    container = open_container(path)
    if container.find("styles.csv") is not None:
        return "fashion-product"
    if _is_clothing_attributes(container):
        return "clothing-attributes"
    if container.find("list_category_img.txt") is not None:
        return "deepfashion"
    if find_inshop_partition(container) is not None:
        return "deepfashion-inshop"
    if find_labels(container) is not None:
        return "fashionai"
    return "folder"


def open_catalogue(source: str | Path, format: str | None = None, **options: object) -> Catalogue:
    """Open a catalogue: ``source`` is a folder or zip (or ``"fashion-mnist"`` for the Debian package's
    files); ``format`` one of :data:`READERS` (detected when None); ``options`` go to the reader.
    ``limit=N`` keeps the first N items of every format (Fashion-MNIST's reader takes N per split)."""
    formats = ", ".join(READERS)
    if format is not None and format not in READERS:
        raise CatalogueError(f"unknown catalogue format {format!r}; valid formats: {formats}")
    path = Path(source)
    if str(source) == "fashion-mnist" and not path.exists():
        path, format = DEBIAN_PATH, format or "fashion-mnist"
    if not path.exists() and format != "fashion-mnist":  # its reader explains how to install it
        raise CatalogueError(f"{path}: no such file or folder (a catalogue is a folder or zip in one of "
                             f"the formats: {formats}; or 'fashion-mnist')")
    format = format or detect_format(path)
    reader = READERS[format]
    parameters = inspect.signature(reader).parameters
    limit = options.pop("limit", None) if "limit" not in parameters else None
    try:
        inspect.signature(reader).bind(path, **options)
    except TypeError:
        accepted = [p for p in parameters if p != "source"]
        raise CatalogueError(f"format {format!r} does not take option(s) {', '.join(options)}; "
                             f"it takes: {', '.join(accepted) or 'none'}") from None
    catalogue = reader(path, **options)
    return catalogue if limit is None else _first(catalogue, limit)


def _first(catalogue: Catalogue, limit: object) -> Catalogue:
    """The first ``limit`` items of a catalogue whose reader has no limit of its own."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise CatalogueError(f"limit must be a whole number, zero or more, not {limit!r}")
    return Catalogue(catalogue.format, catalogue.root, catalogue.columns,
                     lambda: itertools.islice(catalogue.items(), limit), min(len(catalogue), limit))

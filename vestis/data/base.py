"""The catalogue model every reader produces: items with an id, a source URI and metadata.

A *source URI* names where an item's encoded image bytes live, so a collection can fetch
them again later (for result grids, the web page, re-indexing):

- a plain absolute filesystem path: ``/data/shop/images/123.jpg``
- a member of a zip archive: ``zip:/data/fpi.zip::images/123.jpg``
- an image inside an IDX file (Fashion-MNIST): ``idx:/usr/share/.../train-images-idx3-ubyte.gz::123``

``vestis.data.sources.read_source(uri)`` returns the bytes for any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CatalogueItem:
    """One catalogue entry.

    ``stamp`` is a cheap change signature (size + mtime for files, CRC + size for zip members)
    used by incremental indexing to skip unchanged items without reading them.
    ``read`` returns the encoded image bytes (JPEG/PNG/WebP...).
    """

    id: str
    source: str
    metadata: dict[str, Any]
    stamp: str
    read: Callable[[], bytes] = field(repr=False, compare=False)


@dataclass
class Catalogue:
    """A readable catalogue: its format name, root (the folder or archive it came from),
    the label columns it knows, and its items (an iterable that can be walked more than once).

    Formats that define an official split (DeepFashion, In-shop, Fashion-MNIST) put it in each
    item's metadata under ``split`` (``train``/``val``/``test``, or ``query``/``gallery``)."""

    format: str
    root: Path
    columns: list[str]
    items: Callable[[], Iterator[CatalogueItem]] = field(repr=False)
    size: int | None = None

    def __iter__(self) -> Iterator[CatalogueItem]:
        return self.items()

    def __len__(self) -> int:
        if self.size is None:
            self.size = sum(1 for _ in self.items())
        return self.size

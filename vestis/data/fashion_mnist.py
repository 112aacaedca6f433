"""Reader for Fashion-MNIST (Zalando; MIT licence): 70,000 28x28 grey images in IDX files.

Debian's ``dataset-fashion-mnist`` package installs them as
``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``; gzipped or
plain files in any folder work too. Items are ``train-00000``... then ``test-00000``...; their
source is an ``idx:`` URI whose bytes are a PNG made on demand.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vestis.data.base import Catalogue, CatalogueItem
from vestis.data.sources import file_stamp, idx_uri, read_idx, read_source
from vestis.errors import CatalogueError

DEBIAN_PATH = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
SPLITS = (("train", "train"), ("test", "t10k"))
"""(split name, file name prefix)."""


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    """``<prefix>-<kind>-idxN-ubyte[.gz]`` (or ``.idxN-ubyte``) in ``folder``, if present."""
    hits = sorted(folder.glob(f"{prefix}-{kind}[-.]idx[0-9]-ubyte*"))
    return hits[0] if hits else None


def is_fashion_mnist_folder(folder: Path) -> bool:
    """Whether ``folder`` holds the images file of at least one Fashion-MNIST split."""
    return folder.is_dir() and any(_idx_file(folder, prefix, "images") for _, prefix in SPLITS)


def _split(folder: Path, prefix: str, limit: int | None) -> tuple[Path, np.ndarray, str] | None:
    """(images file, labels, stamp prefix) of one split, or None when its images are absent."""
    images_path = _idx_file(folder, prefix, "images")
    if images_path is None:
        return None
    labels_path = _idx_file(folder, prefix, "labels")
    if labels_path is None:
        raise CatalogueError(f"{folder}: {images_path.name} has no matching {prefix}-labels-idx1-ubyte file")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CatalogueError(f"{images_path}: not an IDX image file (array {images.shape} of {images.dtype})")
    if labels.ndim != 1 or len(labels) != len(images):
        raise CatalogueError(f"{labels_path}: expected {len(images)} labels, found an array {labels.shape}")
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(CLASSES):
        raise CatalogueError(f"{labels_path}: labels outside 0..{len(CLASSES) - 1}")
    return images_path, labels[:limit], file_stamp(images_path)


def read_fashion_mnist(source: str | Path = DEBIAN_PATH, *, limit: int | None = None) -> Catalogue:
    """The train and test splits in ``source`` (a folder of IDX files, or one of those files).

    ``limit`` keeps the first N images of each split (for demos and tests).
    Metadata: ``label`` (class name), ``label_id`` (``"0"``..``"9"``), ``split``.
    """
    folder = Path(source)
    folder = folder.parent if folder.is_file() else folder
    if not folder.is_dir():
        hint = " (install it with: apt-get install dataset-fashion-mnist)" if folder == DEBIAN_PATH else ""
        raise CatalogueError(f"{folder}: no such folder{hint}")
    if limit is not None and limit < 0:
        raise CatalogueError(f"limit must be zero or more, not {limit}")
    splits = [(name, found) for name, prefix in SPLITS if (found := _split(folder, prefix, limit))]
    if not splits:
        raise CatalogueError(f"{folder}: no Fashion-MNIST files (train-images-idx3-ubyte.gz, "
                             "t10k-images-idx3-ubyte.gz and their labels files)")

    def items() -> Iterator[CatalogueItem]:
        for split, (images_path, labels, stamp) in splits:
            for n, label in enumerate(labels.tolist()):
                uri = idx_uri(images_path, n)
                metadata = {"label": CLASSES[label], "label_id": str(label), "split": split}
                yield CatalogueItem(f"{split}-{n:05d}", uri, metadata, f"{stamp}:{n}",
                                    functools.partial(read_source, uri))

    size = sum(len(labels) for _, (_, labels, _) in splits)
    return Catalogue("fashion-mnist", folder.absolute(), ["label", "label_id", "split"], items, size)

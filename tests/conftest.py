"""Shared fixtures: small real images made with Pillow, and the shared datasets when present."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def garment_image(colour: tuple[int, int, int], shape: str = "shirt", size=(120, 160), seed: int = 0):
    """A synthetic 'garment': a coloured silhouette on a light background, with a little noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.new("RGB", size, (245, 245, 245))
    d = ImageDraw.Draw(im)
    if shape == "shirt":
        d.polygon([(w * .3, h * .1), (w * .7, h * .1), (w * .95, h * .35), (w * .8, h * .45),
                   (w * .75, h * .9), (w * .25, h * .9), (w * .2, h * .45), (w * .05, h * .35)], fill=colour)
    elif shape == "trousers":
        d.polygon([(w * .3, h * .05), (w * .7, h * .05), (w * .8, h * .95), (w * .55, h * .95),
                   (w * .5, h * .4), (w * .45, h * .95), (w * .2, h * .95)], fill=colour)
    else:  # dress
        d.polygon([(w * .4, h * .05), (w * .6, h * .05), (w * .9, h * .95), (w * .1, h * .95)], fill=colour)
    arr = np.asarray(im).astype(np.int16) + rng.integers(-6, 7, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_catalogue(folder: Path, colours: dict[str, tuple[int, int, int]], shapes, copies: int = 2, *,
                    size=(120, 160), seed: int = 0, labels=None) -> list[dict]:
    """A folder catalogue of garment photos: ``COLOUR-SHAPE-N.jpg`` for each colour, shape and copy,
    and a metadata.csv with id, path, colour and kind (and ``labels(colour, shape, n)``'s columns).
    Returns the rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for colour, rgb in colours.items():
        for shape in shapes:
            for n in range(copies):
                item = f"{colour}-{shape}-{n}"
                (folder / f"{item}.jpg").write_bytes(jpeg_bytes(garment_image(rgb, shape, size=size, seed=seed + n)))
                rows.append({"id": item, "path": f"{item}.jpg", "colour": colour, "kind": shape,
                             **(labels(colour, shape, n) if labels else {})})
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.fixture
def make_garment():
    return garment_image


@pytest.fixture
def shared_datasets() -> Path:
    """Path to ../shared/datasets; skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/datasets is not present")
    return SHARED


@pytest.fixture
def fpi300(shared_datasets) -> Path:
    p = shared_datasets / "fashion-product-images-300.zip"
    if not p.exists():
        pytest.skip(f"{p} is not present")
    return p


@pytest.fixture
def clothing_attributes_zip(shared_datasets) -> Path:
    p = shared_datasets / "clothing-attributes.zip"
    if not p.exists():
        pytest.skip(f"{p} is not present")
    return p


@pytest.fixture(scope="session")
def fpi300_collection(tmp_path_factory):
    """A collection of fashion-product-images-300 built once per test session with the float32
    EfficientNet-Lite0 (the encoder of the reference figures)."""
    if not (SHARED / "fashion-product-images-300.zip").exists():
        pytest.skip("../shared/datasets/fashion-product-images-300.zip is not present")
    from vestis.data import open_catalogue
    from vestis.encoders import get_encoder
    from vestis.store.ingest import index_catalogue, open_or_create

    encoder = get_encoder("efficientnet-lite0")
    collection = open_or_create(tmp_path_factory.mktemp("fpi300") / "collection", encoder, None)
    catalogue = open_catalogue(SHARED / "fashion-product-images-300.zip")
    index_catalogue(collection, catalogue, encoder, progress=False)
    return collection

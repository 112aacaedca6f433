"""Colour descriptor: compact unit vectors whose inner product follows the garment's colour."""

import numpy as np
from PIL import Image

from vestis.encoders.colour import COLOUR_DIM, COLOUR_VERSION, colour_descriptor

RED, DARK_RED, BLUE, NAVY = (200, 25, 30), (170, 20, 35), (30, 60, 200), (20, 30, 90)


def on_background(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """The fixture's garment with its light-grey background replaced."""
    arr = np.asarray(image).copy()
    arr[(arr > 225).all(axis=2)] = background
    return Image.fromarray(arr)


def test_shape_dtype_norm(make_garment):
    d = colour_descriptor(make_garment(RED))
    assert d.shape == (COLOUR_DIM,) and d.dtype == np.float32 and COLOUR_DIM <= 128
    assert abs(float(np.linalg.norm(d)) - 1) < 1e-5 and (d >= 0).all()
    assert COLOUR_VERSION
    flat = colour_descriptor(Image.new("RGB", (50, 50), (255, 255, 255)))  # nothing but background
    assert np.isfinite(flat).all() and abs(float(np.linalg.norm(flat)) - 1) < 1e-5


def test_same_colour_garments_score_higher_than_different_colours(make_garment):
    red_shirt = colour_descriptor(make_garment(RED, "shirt", seed=1))
    red_dress = colour_descriptor(make_garment(DARK_RED, "dress", seed=2))
    blue_shirt = colour_descriptor(make_garment(BLUE, "shirt", seed=1))
    navy_trousers = colour_descriptor(make_garment(NAVY, "trousers", seed=3))
    assert red_shirt @ red_dress > 0.6 > red_shirt @ blue_shirt
    assert blue_shirt @ navy_trousers > red_shirt @ navy_trousers
    assert 0.0 <= red_shirt @ blue_shirt <= 1.0


def test_background_matters_less_than_garment(make_garment):
    red = make_garment(RED, "shirt")
    d = colour_descriptor(red)
    beige_bg = colour_descriptor(on_background(red, (225, 210, 180)))
    grey_bg = colour_descriptor(on_background(red, (180, 180, 180)))
    blue = colour_descriptor(make_garment(BLUE, "shirt"))
    assert min(d @ beige_bg, d @ grey_bg) > 0.85
    assert min(d @ beige_bg, d @ grey_bg) > d @ blue + 0.5


def test_invariant_to_image_size(make_garment):
    image = make_garment(RED, "dress", size=(225, 300))
    d = colour_descriptor(image)
    for size in [(60, 80), (450, 600), (112, 150)]:
        assert d @ colour_descriptor(image.resize(size, Image.Resampling.BILINEAR)) > 0.97

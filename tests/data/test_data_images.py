"""decode_image: every common image kind decodes to the right RGB pixels; every bad input is an ImageError."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tests.conftest import jpeg_bytes
from PIL import Image

from vestis.data.images import IMAGE_EXTENSIONS, decode_image, is_image_name
from vestis.errors import ImageError


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels but carries almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_jpeg_decodes_to_rgb_with_the_garment_colour(make_garment):
    im = decode_image(jpeg_bytes(make_garment((200, 30, 30))), source="shirt.jpg")
    assert (im.mode, im.size) == ("RGB", (120, 160))
    centre = np.asarray(im)[80, 60].astype(int)
    assert np.abs(centre - (200, 30, 30)).max() < 20
    assert np.asarray(im)[2, 2].min() > 220  # light background


@pytest.mark.parametrize("fmt, params", [("PNG", {}), ("WEBP", {"lossless": True})])
def test_lossless_formats_round_trip_exactly(make_garment, fmt, params):
    original = make_garment((20, 90, 160), shape="dress")
    im = decode_image(encode(original, fmt, **params))
    assert im.mode == "RGB"
    assert np.array_equal(np.asarray(im), np.asarray(original))


def test_rgba_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)      # opaque red
    rgba[0, 1] = (0, 0, 255, 0)        # fully transparent blue
    rgba[0, 2] = (0, 0, 0, 128)        # half-transparent black
    px = np.asarray(decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))).astype(int)
    assert tuple(px[0, 0]) == (255, 0, 0)
    assert tuple(px[0, 1]) == (255, 255, 255)
    assert all(abs(v - 127) <= 2 for v in px[0, 2])


def test_palette_with_transparency_is_composited_on_white():
    im = Image.new("P", (3, 1))
    im.putpalette([0, 200, 0, 10, 10, 10] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 1
    px = np.asarray(decode_image(encode(im, "PNG", transparency=1)))
    assert tuple(px[0, 0]) == (0, 200, 0)
    assert tuple(px[0, 1]) == (255, 255, 255)


def test_greyscale_8_and_16_bit():
    grey = decode_image(encode(Image.fromarray(np.full((5, 6), 77, np.uint8), "L"), "PNG"))
    assert grey.mode == "RGB" and grey.size == (6, 5)
    assert np.all(np.asarray(grey) == 77)
    deep = np.array([[0, 32896, 65535]], np.uint16)
    px = np.asarray(decode_image(encode(Image.fromarray(deep), "PNG")))
    assert px[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high, red block top-left
    arr[:6, :6] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    im = decode_image(encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes()))
    assert im.size == (20, 40)
    px = np.asarray(im).astype(int)
    assert px[2, 17, 0] > 200 and px[2, 17, 1] < 60  # now top-right
    assert px[2, 2, 0] < 60


def test_truncated_jpeg_is_refused(make_garment):
    data = jpeg_bytes(make_garment((10, 10, 10)))
    with pytest.raises(ImageError, match=r"truncated.*cut\.jpg"):
        decode_image(data[: len(data) // 2], source="cut.jpg")


@pytest.mark.parametrize("data", [b"", b"\x00" * 10, np.random.default_rng(0).bytes(5000)])
def test_non_images_are_refused(data):
    with pytest.raises(ImageError, match=r"not an image.*junk\.bin"):
        decode_image(data, source="junk.bin")


def test_corrupt_png_data_is_refused():
    data = bytearray(encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start:start + 20] = b"\xff" * 20
    with pytest.raises(ImageError):
        decode_image(bytes(data))


def test_decompression_bomb_is_refused_from_the_header_before_decoding():
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match=r"too large: 10000x10000 > 1,000,000 pixels \(bomb\.png\)"):
        decode_image(png_claiming(10_000, 10_000), max_pixels=1_000_000, source="bomb.png")
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("side", [10_000, 20_000])  # above Pillow's warning and its error thresholds
def test_huge_headers_at_the_default_limit_raise_without_leaking_warnings(side):
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match="too large"):
            decode_image(png_claiming(side, side))
    assert caught == []
    assert warnings.filters == before


def test_concurrent_decoding_gives_the_same_pixels(make_garment):
    data = [encode(make_garment((i * 20, 100, 50), seed=i), "PNG") for i in range(8)]
    expected = [np.asarray(decode_image(d)) for d in data]
    before = list(warnings.filters)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda d: np.asarray(decode_image(d)), data * 4))
    assert all(np.array_equal(g, expected[i % 8]) for i, g in enumerate(got))
    assert warnings.filters == before


def test_image_extensions_are_case_insensitive():
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp"}
    assert all(is_image_name(n) for n in ["a.jpg", "b.JPEG", "c.Png", "d/e.webp"])
    assert not any(is_image_name(n) for n in ["a.txt", "jpg", "styles.csv", "x.jpg.gz"])

"""Preprocessing: deterministic, right shape/dtype, geometry of pad/crop/stretch, normalisation."""

import numpy as np
import pytest
from PIL import Image

from vestis.encoders.preprocess import NORMALISATIONS, PreprocessSpec, to_rgb
from vestis.errors import VestisError

RED = (200, 20, 30)


def white_value(spec: PreprocessSpec) -> np.ndarray:
    return (1 - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)


def test_deterministic_shape_and_dtype(make_garment):
    spec = PreprocessSpec()
    image = make_garment((30, 60, 200), "dress", size=(225, 300))
    a, b = spec(image), spec(image.copy())
    assert a.shape == (3, 224, 224) and a.dtype == np.float32 and a.flags.c_contiguous
    assert np.array_equal(a, b)


def test_pad_keeps_the_whole_portrait_image_and_pads_with_white():
    spec = PreprocessSpec(resize="pad")
    x = spec(Image.new("RGB", (225, 300), RED))  # scaled to 168 x 224, 28 px of white each side
    assert np.allclose(x[:, :, :27], white_value(spec)[:, None, None], atol=1e-5)
    assert np.allclose(x[:, :, -27:], white_value(spec)[:, None, None], atol=1e-5)
    red = (np.asarray(RED, np.float32) / 255 - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    assert np.allclose(x[:, :, 30:-30], red[:, None, None], atol=1e-4)  # every row: nothing cut


def test_crop_fills_the_square_and_cuts_the_ends():
    image = Image.new("RGB", (225, 300), (255, 255, 255))
    image.paste(RED, (0, 0, 225, 30))  # a red band on top, cut by a centre crop
    x = PreprocessSpec(resize="crop")(image)
    assert np.allclose(x, white_value(PreprocessSpec())[:, None, None], atol=1e-5)
    padded = PreprocessSpec(resize="pad")(image)
    assert not np.allclose(padded[:, :10], white_value(PreprocessSpec())[:, None, None], atol=1e-3)


def test_stretch_and_extreme_aspect_ratios():
    for size in [(1, 1), (1000, 10), (10, 1000), (60, 80)]:
        for mode in ("pad", "crop", "stretch"):
            x = PreprocessSpec(size=64, resize=mode)(Image.new("RGB", size, RED))
            assert x.shape == (3, 64, 64) and np.isfinite(x).all()


def test_normalisations():
    white = Image.new("RGB", (50, 50), (255, 255, 255))
    tf = PreprocessSpec.named("tf")(white)
    assert np.allclose(tf, 128 / 128, atol=1e-6)  # (255 - 127) / 128
    black = PreprocessSpec.named("tf")(Image.new("RGB", (50, 50), (0, 0, 0)))
    assert np.allclose(black, -127 / 128, atol=1e-6)
    imagenet = PreprocessSpec.named("imagenet")(white)
    assert np.allclose(imagenet[:, 0, 0], white_value(PreprocessSpec()), atol=1e-5)


def test_tags_name_every_choice():
    assert PreprocessSpec().tag == "imagenet/crop224"
    assert PreprocessSpec.named("tf", resize="pad", size=256).tag == "tf/pad256"
    assert PreprocessSpec(resample="bicubic").tag == "imagenet/crop224-bicubic"
    custom = PreprocessSpec(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert custom.normalisation.startswith("norm-") and custom.tag != PreprocessSpec().tag
    assert set(NORMALISATIONS) == {"imagenet", "tf"}


@pytest.mark.parametrize("kwargs", [{"resize": "squash"}, {"resample": "nearest"}, {"size": 0},
                                    {"std": (0.0, 1.0, 1.0)}])
def test_bad_specs_are_refused(kwargs):
    with pytest.raises(VestisError):
        PreprocessSpec(**kwargs)
    with pytest.raises(VestisError, match="imagenet"):
        PreprocessSpec.named("caffe")


def test_transparency_goes_on_white_and_grey_becomes_rgb():
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    rgba.paste((10, 200, 10, 255), (5, 5, 15, 15))
    rgb = np.asarray(to_rgb(rgba))
    assert (rgb[0, 0] == 255).all() and tuple(rgb[10, 10]) == (10, 200, 10)
    grey = PreprocessSpec()(Image.new("L", (30, 40), 100))
    assert np.allclose(grey[0] * 0.229 + 0.485, grey[1] * 0.224 + 0.456, atol=1e-5)

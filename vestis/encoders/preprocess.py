"""Deterministic image preprocessing with Pillow + NumPy (no torchvision).

A :class:`PreprocessSpec` says how an image becomes the network input: how it is brought to a
square (``crop``: scale the shorter side to the input size and cut the centre, ``pad``: fit the
whole image and pad with white, ``stretch``: ignore the aspect ratio), the resampling filter, and the normalisation (per-channel
mean and std on the 0-1 scale, as torchvision writes them). Its ``tag`` goes into an encoder's
version string, so changing any choice invalidates collections built with the old one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from vestis.errors import VestisError

ResizeMode = Literal["pad", "crop", "stretch"]
RESIZE_MODES: tuple[str, ...] = ("pad", "crop", "stretch")

# Named normalisations (mean, std) on the 0-1 scale. "tf" is (x - 127) / 128, the [-1, 1] scaling
# of the TensorFlow EfficientNet-Lite checkpoints; "imagenet" is torchvision's mean/std.
NORMALISATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "tf": ((127 / 255,) * 3, (128 / 255,) * 3),
}
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
PAD_COLOUR = (255, 255, 255)  # catalogue backgrounds are white: padding with it adds no new edges


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparent images put on white (converting RGBA straight to RGB would show the
    often black colour of transparent pixels). EXIF orientation is not applied here: decoding
    (``vestis.data.images.decode_image``) does it, and its output keeps the EXIF tag."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*PAD_COLOUR, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes a CHW float32 network input of ``size`` x ``size`` pixels."""

    size: int = 224
    resize: ResizeMode = "crop"
    mean: tuple[float, float, float] = NORMALISATIONS["imagenet"][0]
    std: tuple[float, float, float] = NORMALISATIONS["imagenet"][1]
    resample: Literal["bilinear", "bicubic"] = "bilinear"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise VestisError(f"unknown resize mode {self.resize!r}; use one of {', '.join(RESIZE_MODES)}")
        if self.resample not in _RESAMPLE:
            raise VestisError(f"unknown resampling {self.resample!r}; use one of {', '.join(_RESAMPLE)}")
        if self.size < 8 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise VestisError(f"bad preprocessing: size {self.size}, mean {self.mean}, std {self.std}")

    @classmethod
    def named(cls, normalisation: str, **kwargs) -> PreprocessSpec:
        """A spec using one of the named normalisations ("imagenet", "tf")."""
        if normalisation not in NORMALISATIONS:
            raise VestisError(f"unknown normalisation {normalisation!r}; use one of {', '.join(NORMALISATIONS)}")
        mean, std = NORMALISATIONS[normalisation]
        return cls(mean=mean, std=std, **kwargs)

    @property
    def normalisation(self) -> str:
        """The normalisation's name, or ``norm-<hash>`` for custom values."""
        for name, (mean, std) in NORMALISATIONS.items():
            if np.allclose(self.mean, mean, atol=1e-4) and np.allclose(self.std, std, atol=1e-4):
                return name
        digest = hashlib.sha256(repr((self.mean, self.std)).encode()).hexdigest()[:8]
        return f"norm-{digest}"

    @property
    def tag(self) -> str:
        """Version fragment, e.g. ``imagenet/pad224`` (``-bicubic`` is appended when not bilinear)."""
        suffix = "" if self.resample == "bilinear" else f"-{self.resample}"
        return f"{self.normalisation}/{self.resize}{self.size}{suffix}"

    def square(self, image: Image.Image) -> Image.Image:
        """The upright RGB image brought to ``size`` x ``size`` as the spec says."""
        image = to_rgb(image)
        w, h = image.size
        size, resample = self.size, _RESAMPLE[self.resample]
        if self.resize == "stretch":
            return image.resize((size, size), resample, reducing_gap=3.0)
        if self.resize == "pad":
            scale = size / max(w, h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            canvas = Image.new("RGB", (size, size), PAD_COLOUR)
            canvas.paste(image.resize((nw, nh), resample, reducing_gap=3.0), ((size - nw) // 2, (size - nh) // 2))
            return canvas
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        left, top = (nw - size) // 2, (nh - size) // 2
        return image.resize((nw, nh), resample, reducing_gap=3.0).crop((left, top, left + size, top + size))

    def normalise(self, square: Image.Image) -> np.ndarray:
        """HWC uint8 RGB -> CHW float32 ``(x / 255 - mean) / std``."""
        mean = np.asarray(self.mean, np.float32)[:, None, None] * 255
        inv_std = 1 / (np.asarray(self.std, np.float32)[:, None, None] * 255)
        # transposing the uint8 view costs nothing; one float32 pass writes the CHW array
        chw = np.subtract(np.asarray(square).transpose(2, 0, 1), mean, dtype=np.float32, order="C")
        chw *= inv_std
        return chw

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Preprocess one image to a CHW float32 array of shape (3, size, size)."""
        return self.normalise(self.square(image))

"""A compact garment-colour descriptor: a foreground-weighted HSV histogram, Hellinger-normalised.

Chromatic pixels fall into 12 hue x 3 saturation x 3 value bins; pixels with little saturation or
light fall into 8 grey-level bins instead (their hue is noise). Votes are split linearly between
neighbouring bins (and between chromatic and grey near the threshold), so similar colours on
either side of a bin edge still match. Each pixel is weighted by a
centred Gaussian times a foreground estimate (its colour distance from the median border
colour, since catalogue backgrounds are mostly flat white or grey), so the garment dominates.
The histogram is normalised to sum 1 and square-rooted: the inner product of two descriptors is
their Bhattacharyya coefficient, a similarity in [0, 1].
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vestis.encoders.preprocess import to_rgb

HUE_BINS, SAT_BINS, VAL_BINS, GREY_BINS = 12, 3, 3, 8
COLOUR_DIM = HUE_BINS * SAT_BINS * VAL_BINS + GREY_BINS  # 116
COLOUR_VERSION = "hsv12x3x3+grey8/soft/fg-centre/v1"

_WORK = 64  # images are resampled to 64 x 64 first: size invariance, and cheap beside the network
_MIN_SAT, _MIN_VAL = 0.1, 0.08  # chromatic weight ramps up from these ...
_RAMP_SAT, _RAMP_VAL = 0.2, 0.14  # ... over these widths (below, a pixel counts as grey)
_FG_SCALE = 40.0  # RGB distance from the border colour at which a pixel is ~63% foreground
_BACKGROUND_WEIGHT = 0.05  # background keeps a little weight: an all-flat image still has a histogram


def _centre_weights() -> np.ndarray:
    r = (np.arange(_WORK) + 0.5) / _WORK - 0.5
    return np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 0.3 ** 2)).ravel().astype(np.float32)


_CENTRE = _centre_weights()
_BORDER = np.zeros((_WORK, _WORK), bool)
_BORDER[[0, 1, -2, -1], :] = _BORDER[:, [0, 1, -2, -1]] = True
_BORDER = _BORDER.ravel()


def _soft_bins(x: np.ndarray, n: int, circular: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Linear interpolation of values in [0, 1] between the two nearest of ``n`` bin centres:
    [(bin, weight), (bin, weight)], so a small colour change moves weight gradually."""
    c = x * n if circular else np.clip(x * n - 0.5, 0, n - 1)
    lo = np.floor(c)
    frac = c - lo
    lo = lo.astype(np.int64)
    hi = (lo + 1) % n if circular else np.minimum(lo + 1, n - 1)
    return [(lo % n, 1 - frac), (hi, frac)]


def colour_descriptor(image: Image.Image) -> np.ndarray:
    """COLOUR_DIM float32 vector with unit L2 norm (the square root of a colour histogram)."""
    small = to_rgb(image).resize((_WORK, _WORK), Image.Resampling.BILINEAR, reducing_gap=3.0)
    rgb = np.asarray(small, np.float32).reshape(-1, 3)
    h, s, v = (np.asarray(small.convert("HSV"), np.float32).reshape(-1, 3) / 255.0).T

    # the border's median colour, by sorting: np.median would import numpy.ma on a cold start
    edge = np.sort(rgb[_BORDER], axis=0)
    border = (edge[(len(edge) - 1) // 2] + edge[len(edge) // 2]) / np.float32(2)
    diff = (rgb - border) / np.float32(_FG_SCALE)
    weight = _CENTRE * (np.float32(1 + _BACKGROUND_WEIGHT) - np.exp(-np.einsum("ij,ij->i", diff, diff)))
    chroma = np.clip((s - _MIN_SAT) / _RAMP_SAT, 0, 1) * np.clip((v - _MIN_VAL) / _RAMP_VAL, 0, 1)

    hue = _soft_bins(h, HUE_BINS, circular=True)
    sat = _soft_bins(np.clip((s - _MIN_SAT) / (1 - _MIN_SAT), 0, 1), SAT_BINS)
    val = _soft_bins(np.clip((v - _MIN_VAL) / (1 - _MIN_VAL), 0, 1), VAL_BINS)
    chromatic, grey = weight * chroma, weight * (1 - chroma)
    bins = [(hb * SAT_BINS + sb) * VAL_BINS + vb for hb, _ in hue for sb, _ in sat for vb, _ in val]
    weights = [chromatic * hw * sw * vw for _, hw in hue for _, sw in sat for _, vw in val]
    for gb, gw in _soft_bins(v, GREY_BINS):
        bins.append(HUE_BINS * SAT_BINS * VAL_BINS + gb)
        weights.append(grey * gw)
    hist = np.bincount(np.concatenate(bins), weights=np.concatenate(weights), minlength=COLOUR_DIM)
    return np.sqrt(hist / hist.sum()).astype(np.float32)

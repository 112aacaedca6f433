"""8-bit encoders: onnxruntime static quantization of a built-in backbone's float32 export.

``<backbone>-int8`` is the float32 ONNX export quantized in QDQ format: weights as signed integers
per output channel, activations as unsigned 8-bit per tensor with ranges calibrated (min/max) on
:data:`CALIBRATION_IMAGES` generated images. Weights use 7 of their 8 bits (``reduce_range``): on
x86 CPUs without VNNI, onnxruntime multiplies unsigned by signed bytes and adds pairs of products
in 16 bits, which overflows with full-range weights and distorted the embeddings badly (see
BENCHMARKS.md); unsigned weights avoid that too but run slower than float32 there.

``<backbone>-int8-vnni`` is the same with full 8-bit weights, for CPUs with VNNI (AVX-512 VNNI or
AVX-VNNI), whose 8-bit dot products add in 32 bits: embeddings closer to float32 (cosine 0.993
against 0.955) and faster (benchmarks/results/int8-variants.md). On a CPU without VNNI its sums
overflow, so :func:`vestis.encoders.get_encoder` refuses it there.

Both are calibrated on generated, not catalogue, images: the quantized model is then the same
file on every machine of a kind and for every collection, so a query embedded for one collection
is comparable with any other built with the same encoder version, and no dataset image has to
ship with vestis. The generator draws what catalogue photos are made of: flat
backgrounds (mostly white, some grey or black), a few garment-sized silhouettes with solid,
striped, checked or fabric-noise fills, soft edges, lighting gradients and sensor noise.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vestis.encoders.preprocess import PreprocessSpec

SUFFIX = "-int8"
VNNI_SUFFIX = "-int8-vnni"
CALIBRATION_IMAGES = 256
CALIBRATION_SEED = 0
CALIBRATION_BATCH = 16
RECIPE = f"qdq-u8s7-minmax-synth{CALIBRATION_IMAGES}"  # goes into the encoder version: change it when the recipe changes
VNNI_RECIPE = f"qdq-u8s8-minmax-synth{CALIBRATION_IMAGES}"  # likewise, for VNNI_SUFFIX
TEXT_RECIPE = "dynamic-s7-perchannel"  # the text encoders' (:func:`quantize_text_model`): likewise


# name suffix -> (recipe version string, its quantize_model options beyond RECIPE_OPTIONS)
RECIPES: dict[str, tuple[str, dict[str, str | bool]]] = {SUFFIX: (RECIPE, {}),
                                                          VNNI_SUFFIX: (VNNI_RECIPE, {"reduce_range": False})}


def quantized_name(backbone: str, vnni: bool = False) -> str:
    """The 8-bit encoder of ``backbone``: the portable recipe, or with ``vnni`` the one for VNNI CPUs."""
    return backbone + (VNNI_SUFFIX if vnni else SUFFIX)


def _suffix(name: str) -> str | None:
    return next((s for s in (VNNI_SUFFIX, SUFFIX) if name.endswith(s)), None)


def backbone_of(name: str) -> str | None:
    """The float32 backbone behind an ``-int8`` or ``-int8-vnni`` encoder name, or None for any other name."""
    suffix = _suffix(name)
    return name[: -len(suffix)] if suffix else None


def needs_vnni(name: str) -> bool:
    """Whether encoder ``name`` is an 8-bit recipe that only a CPU with VNNI runs correctly."""
    return _suffix(name) == VNNI_SUFFIX


def recipe_of(name: str) -> tuple[str, dict[str, str | bool]] | None:
    """An 8-bit image encoder's recipe: its version string and the :func:`quantize_model` options
    that differ from :data:`RECIPE_OPTIONS`; None for any other name."""
    suffix = _suffix(name)
    return RECIPES[suffix] if suffix else None


def calibration_image(rng: np.random.Generator, size: int = 224) -> Image.Image:
    """One generated product-photo-like picture (see the module docstring)."""
    base = rng.choice([rng.integers(235, 256), rng.integers(150, 235), rng.integers(0, 40)], p=[0.6, 0.25, 0.15])
    canvas = np.full((size, size, 3), base, np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for _ in range(rng.integers(1, 4)):
        mask = _silhouette(rng, size)
        colour = rng.uniform(0, 255, 3) if rng.random() < 0.8 else np.full(3, rng.uniform(0, 255))
        texture = _texture(rng, int(rng.integers(0, 4)), xx, yy)
        fill = colour + texture * (rng.uniform(0, 255, 3) - colour) * rng.uniform(0.2, 1.0)
        shade = 1 + rng.uniform(-0.3, 0.3) * (yy - 0.5)[..., None] + rng.uniform(-0.3, 0.3) * (xx - 0.5)[..., None]
        canvas = canvas * (1 - mask) + fill * shade * mask
    canvas += rng.normal(0, rng.uniform(0, 6), canvas.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def _silhouette(rng: np.random.Generator, size: int) -> np.ndarray:
    """A soft-edged ellipse or random polygon as an H x W x 1 mask in [0, 1]."""
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    r = rng.uniform(0.15, 0.45) * size
    if rng.random() < 0.3:
        draw.ellipse([cx - r, cy - r * rng.uniform(0.4, 1), cx + r, cy + r * rng.uniform(0.4, 1)], fill=255)
    else:
        corners = int(rng.integers(3, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
        radii = r * rng.uniform(0.5, 1.0, corners)
        draw.polygon(list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles))), fill=255)
    blurred = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 2)))
    return np.asarray(blurred, np.float32)[..., None] / 255


def _texture(rng: np.random.Generator, kind: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """An H x W x 1 pattern around 0: plain, stripes, checks or fabric-like noise."""
    if kind == 0:
        return np.zeros((*xx.shape, 1), np.float32)
    if kind == 1:
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.02, 0.2)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
        return (np.sin(phase) > 0)[..., None] - np.float32(0.5)
    if kind == 2:
        period = rng.uniform(0.03, 0.15)
        return (((xx // period) + (yy // period)) % 2)[..., None] - np.float32(0.5)
    cells = int(rng.integers(8, 64))
    noise = Image.fromarray(rng.normal(0, 1, (cells, cells)).astype(np.float32))
    return np.asarray(noise.resize(xx.shape[::-1], Image.Resampling.BICUBIC))[..., None] / 3


def calibration_batches(spec: PreprocessSpec, n: int = CALIBRATION_IMAGES,
                        batch: int = CALIBRATION_BATCH) -> Iterator[np.ndarray]:
    """``n`` generated images (seeded: always the same), preprocessed by ``spec``, in batches."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    for start in range(0, n, batch):
        yield np.stack([spec(calibration_image(rng, spec.size)) for _ in range(min(batch, n - start))])


# The portable recipe's onnxruntime settings (RECIPE); benchmarks/int8_variants.py measures others.
RECIPE_OPTIONS = {"quant_format": "QDQ", "per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8",
                  "reduce_range": True}


def quantize_model(float_model: Path, out: Path, batches: Iterator[np.ndarray], input_name: str = "image",
                   **options: str | bool | list[str]) -> None:
    """Write the static quantization of ``float_model`` to ``out``, calibrated (min/max) on ``batches``:
    :data:`RECIPE_OPTIONS`, or those with ``options`` replaced (onnxruntime's names; enum values
    by name, e.g. ``quant_format="QOperator"``, ``reduce_range=False``, ``nodes_to_exclude=[names]``).

    The float graph is first shape-inferred and optimised (onnxruntime's recommended
    pre-processing), so that BatchNorm is folded into the convolutions before their weights are
    quantized per channel.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(({input_name: b} for b in batches), None)

    chosen = {**RECIPE_OPTIONS, **options}
    enums = {"quant_format": QuantFormat, "activation_type": QuantType, "weight_type": QuantType}
    settings = {key: getattr(enums[key], value) if key in enums else value for key, value in chosen.items()}
    with _prepared(float_model, out.parent) as prepared:
        quantize_static(str(prepared), str(out), Reader(), calibrate_method=CalibrationMethod.MinMax, **settings)


@contextmanager
def _prepared(float_model: Path, directory: Path) -> Iterator[Path]:
    """``float_model`` shape-inferred and optimised (onnxruntime's recommended pre-processing), in
    a temporary file under ``directory`` that is removed afterwards."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=directory, prefix=".quantize-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
        yield prepared


def quantize_text_model(float_model: Path, out: Path) -> None:
    """Write the dynamic quantization of a float32 text model to ``out``: weights of its matrix
    products and embedding table as signed 7-bit integers per output channel (the same
    ``reduce_range`` reason as the image encoders'), activations quantized per call from their
    own range, so no calibration set is needed. Output within cosine 0.99 of float32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _prepared(float_model, out.parent) as prepared:
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)

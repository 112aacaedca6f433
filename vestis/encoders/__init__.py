"""Encoders: a registry of built-in pretrained image backbones, any ONNX image model given by
path, and the built-in text encoders (:mod:`vestis.encoders.text`).

``get_encoder("efficientnet-lite0")`` exports the backbone to ONNX once (cached, see
:func:`vestis.encoders.onnx_encoder.builtin_model_path`) and runs it with onnxruntime;
``get_encoder("efficientnet-lite0-int8")`` runs its 8-bit quantization (:mod:`vestis.encoders.quantize`);
``get_encoder("path/to/model.onnx")`` wraps a model trained elsewhere (e.g. by ``vestis.train``).
"""

from __future__ import annotations

from pathlib import Path

from vestis.encoders.base import ImageEncoder
from vestis.encoders.onnx_encoder import OnnxEncoder, OnnxFileEncoder, builtin_model_path, open_session
from vestis.encoders.preprocess import PreprocessSpec
from vestis.encoders.quantize import RECIPE, backbone_of, quantized_name
from vestis.encoders.text import DEFAULT_TEXT_ENCODER, TextEncoder, get_text_encoder, list_text_encoders
from vestis.errors import VestisError

__all__ = [
    "BUILTIN_PREPROCESSING",
    "DEFAULT_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "ImageEncoder",
    "OnnxEncoder",
    "OnnxFileEncoder",
    "PreprocessSpec",
    "TextEncoder",
    "get_encoder",
    "get_text_encoder",
    "list_encoders",
    "list_text_encoders",
]

# The default for new collections (a collection records its encoder and keeps it): the 8-bit
# EfficientNet-Lite0, as good as float32 in leave-one-out P@10 on Fashion Product Images and
# Fashion-MNIST and faster on a CPU (BENCHMARKS.md).
DEFAULT_ENCODER = "efficientnet-lite0-int8"
REVISION = "v1"  # bump when a built-in's embeddings change for any reason not in its preprocessing tag

# Chosen by leave-one-out Precision@10 / hit@1 (same articleType + baseColour) on
# fashion-product-images-300 and a 6,000-image sample of fashion-product-images-small
# (benchmarks/encoders.py): resize-shorter-side + centre crop beat padding to a square for both
# backbones (the garment gets a third more pixels), and EfficientNet-Lite0 does best with the
# (x - 127) / 128 scaling its TensorFlow weights were trained with. The deep-sort MobileNetV2 was
# trained with ImageNet mean/std.
BUILTIN_PREPROCESSING: dict[str, PreprocessSpec] = {
    "efficientnet-lite0": PreprocessSpec.named("tf", size=224, resize="crop"),
    "mobilenetv2": PreprocessSpec.named("imagenet", size=224, resize="crop"),
}
# 8-bit versions (vestis.encoders.quantize) take their backbone's preprocessing. EfficientNet-Lite
# was designed to quantize well (ReLU6 activations, no squeeze-and-excitation).
BUILTIN_PREPROCESSING[quantized_name("efficientnet-lite0")] = BUILTIN_PREPROCESSING["efficientnet-lite0"]


def list_encoders() -> list[str]:
    """Names of the built-in encoders (any ``.onnx`` path is accepted as well)."""
    return sorted(BUILTIN_PREPROCESSING)


def get_encoder(name_or_path: str = DEFAULT_ENCODER, *, cache_dir: Path | None = None,
                threads: int | None = None, preprocess: PreprocessSpec | None = None) -> ImageEncoder:
    """A built-in encoder by name, or an ONNX model by path (``*.onnx``).

    ``cache_dir`` holds the exported built-in models (default: ``$VESTIS_CACHE_DIR/encoders`` or
    ``~/.cache/vestis/encoders``); ``threads`` is onnxruntime's intra-op thread count (default:
    every core); ``preprocess`` overrides a built-in's preprocessing (for experiments: the
    version changes with it).
    """
    name = str(name_or_path)
    if name.lower().endswith(".onnx"):
        return OnnxFileEncoder(Path(name).expanduser(), threads=threads)
    if name not in BUILTIN_PREPROCESSING:
        raise VestisError(f"unknown encoder {name!r}; use one of {', '.join(list_encoders())} "
                          "or the path of an .onnx model")
    spec = preprocess or BUILTIN_PREPROCESSING[name]
    session = open_session(builtin_model_path(name, cache_dir), threads, reuse_optimized=True)
    return OnnxEncoder(session, name=name, version=get_encoder_version(name, spec), preprocess=spec)


def get_encoder_version(name: str, preprocess: PreprocessSpec | None = None) -> str:
    """The version string a built-in encoder records in collections (no model is loaded)."""
    spec = preprocess or BUILTIN_PREPROCESSING[name]
    return f"{name}/{spec.tag}/{REVISION}" + (f"/{RECIPE}" if backbone_of(name) else "")

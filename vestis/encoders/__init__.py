"""Encoders: a registry of built-in pretrained image backbones, any ONNX image model given by
path, and the built-in text encoders (:mod:`vestis.encoders.text`).

``get_encoder("efficientnet-lite0")`` exports the backbone to ONNX once (cached, see
:func:`vestis.encoders.onnx_encoder.builtin_model_path`) and runs it with onnxruntime;
``get_encoder("efficientnet-lite0-int8")`` runs its 8-bit quantization (:mod:`vestis.encoders.quantize`;
``efficientnet-lite0-int8-vnni`` the recipe for CPUs with VNNI);
``get_encoder("path/to/model.onnx")`` wraps a model trained elsewhere (e.g. by ``vestis.train``).
"""

from __future__ import annotations

from pathlib import Path

from vestis.encoders.base import ImageEncoder
from vestis.encoders.onnx_encoder import OnnxEncoder, OnnxFileEncoder, builtin_model_path, open_session
from vestis.encoders.preprocess import PreprocessSpec
from vestis.encoders.cpu import describe_cpu, has_vnni
from vestis.encoders.quantize import backbone_of, needs_vnni, quantized_name, recipe_of
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
    "default_encoder",
    "get_encoder",
    "get_text_encoder",
    "list_encoders",
    "list_text_encoders",
]

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
BUILTIN_PREPROCESSING.update({quantized_name("efficientnet-lite0", vnni): BUILTIN_PREPROCESSING[
    "efficientnet-lite0"] for vnni in (False, True)})


def default_encoder(flags: frozenset[str] | None = None) -> str:
    """The encoder for new collections on a CPU with ``flags`` (default: this one's): the 8-bit
    EfficientNet-Lite0, as good as float32 in leave-one-out P@10 on Fashion Product Images and
    Fashion-MNIST and faster on a CPU (BENCHMARKS.md), by the recipe for VNNI where the CPU has it
    (closer to float32 and faster) and the portable one elsewhere. A collection records its
    encoder and keeps it."""
    return quantized_name("efficientnet-lite0", vnni=has_vnni(flags))


DEFAULT_ENCODER = default_encoder()


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
    if needs_vnni(name) and not has_vnni():
        raise VestisError(f"encoder {name!r} needs a CPU with VNNI (AVX-512 VNNI or AVX-VNNI) and this one "
                          f"has none ({describe_cpu()}): its 8-bit sums would overflow. Use "
                          f"{quantized_name(backbone_of(name))!r} here")
    spec = preprocess or BUILTIN_PREPROCESSING[name]
    session = open_session(builtin_model_path(name, cache_dir), threads, reuse_optimized=True)
    return OnnxEncoder(session, name=name, version=get_encoder_version(name, spec), preprocess=spec)


def get_encoder_version(name: str, preprocess: PreprocessSpec | None = None) -> str:
    """The version string a built-in encoder records in collections (no model is loaded)."""
    spec = preprocess or BUILTIN_PREPROCESSING[name]
    recipe = recipe_of(name)
    return f"{name}/{spec.tag}/{REVISION}" + (f"/{recipe[0]}" if recipe else "")

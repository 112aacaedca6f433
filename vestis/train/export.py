"""Export a trained model to ONNX so the normal commands use it as an encoder.

``export_checkpoint`` joins the backbone (frozen built-in for stage 1, the fine-tuned one for
stage 2) and the head into one graph with a dynamic batch axis. It has the outputs of every vestis
encoder: ``embedding`` (the L2-normalised head output) and the backbone's ``feature_map`` /
``feature_map_14``. Beside ``model.onnx`` it writes the sidecar ``model.json`` with the
preprocessing the backbone was trained with, so ``vestis index SOURCE --encoder runs/x/model.onnx``
(:func:`vestis.encoders.get_encoder`) embeds images exactly as in training. Each export is run
once in onnxruntime and compared with PyTorch: outputs must agree within ``TOLERANCE``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vestis.encoders.onnx_encoder import EMBEDDING, FEATURE_MAPS, INPUT, OPSET, open_session
from vestis.errors import VestisError
from vestis.train.config import HeadConfig
from vestis.train.heads import EmbeddingHead
from vestis.train.trainer import load_checkpoint

TOLERANCE = 1e-4


class EncoderGraph(nn.Module):
    """image -> (retrieval embedding of the head, stride-32 map, stride-16 map)."""

    def __init__(self, backbone: nn.Module, head: EmbeddingHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled, map32, map16 = self.backbone(image)
        return self.head.embed(pooled), map32, map16


def export_module(module: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], path: Path,
                  input_names: str | list[str], output_names: list[str]) -> float:
    """Export ``module`` (eval mode, dynamic batch) and return the largest absolute difference
    between onnxruntime and PyTorch outputs on ``example`` (one tensor, or one per input name);
    raises when it exceeds ``TOLERANCE``. An input the graph does not use is left out of the
    model by the exporter, and out of the check."""
    module = module.eval()
    examples = example if isinstance(example, tuple) else (example,)
    names = [input_names] if isinstance(input_names, str) else list(input_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and folding notices
        torch.onnx.export(module, examples, str(path), dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=output_names,
                          dynamic_axes={n: {0: "batch"} for n in [*names, *output_names]})
        expected = module(*examples)
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = open_session(path)
    feeds = dict(zip(names, (e.numpy() for e in examples)))
    got = session.run(output_names, {i.name: feeds[i.name] for i in session.get_inputs()})
    diff = max(float(np.max(np.abs(g - e.numpy()))) for g, e in zip(got, expected))
    if not diff <= TOLERANCE:
        raise VestisError(f"the ONNX export {path} differs from PyTorch by {diff:.2e} (> {TOLERANCE}); "
                          "it is not usable")
    return diff


def export_encoder(backbone: nn.Module, head: EmbeddingHead, path: str | Path, *, preprocess: Any,
                   sidecar: dict[str, Any], example: torch.Tensor | None = None) -> dict[str, Any]:
    """Backbone + head as one ONNX encoder, with its sidecar JSON. ``preprocess`` is the
    :class:`~vestis.encoders.preprocess.PreprocessSpec` of the backbone; ``example`` a preprocessed
    batch to check the export on (default: random input). Returns the sidecar with the difference."""
    path = Path(path)
    if example is None:
        example = torch.randn(2, 3, preprocess.size, preprocess.size, generator=torch.Generator().manual_seed(0))
    diff = export_module(EncoderGraph(backbone, head), example, path, INPUT, [EMBEDDING, *FEATURE_MAPS.values()])
    meta = {**sidecar, "input_size": preprocess.size, "resize": preprocess.resize, "resample": preprocess.resample,
            "mean": list(preprocess.mean), "std": list(preprocess.std), "dim": head.out_dim,
            "onnx_max_abs_diff": diff}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return meta


def export_checkpoint(checkpoint: str | Path, path: str | Path | None = None, *, name: str | None = None,
                      version: str = "1", example: torch.Tensor | None = None) -> Path:
    """Export a training checkpoint (``best.pt``) to ``path`` (default: ``model.onnx`` beside it)."""
    from vestis.encoders import BUILTIN_PREPROCESSING, get_encoder_version
    from vestis.encoders.quantize import backbone_of
    from vestis.encoders.torch_models import BUILDERS

    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    # A head trained on an 8-bit encoder's features is exported on its float32 network: the
    # quantized graph has no torch twin, and its features match the float ones closely.
    backbone_name = backbone_of(ckpt["backbone"]) or ckpt["backbone"]
    if backbone_name not in BUILDERS:
        raise VestisError(f"the features of {checkpoint} come from encoder {backbone_name!r}, which is not a "
                          f"built-in backbone ({', '.join(BUILDERS)}), so the head cannot be joined to it in one "
                          "encoder")
    spec = BUILTIN_PREPROCESSING[backbone_name]
    expected = get_encoder_version(ckpt["backbone"])
    if ckpt["stage"] == 1 and ckpt["encoder_version"] != expected:
        raise VestisError(f"{checkpoint} was trained on features of {ckpt['encoder_version']}, but the built-in "
                          f"backbone is now {expected}: re-index the data and train again")
    cfg = ckpt["config"]
    head = EmbeddingHead.from_config(ckpt["in_dim"], HeadConfig(**cfg["head"]))
    backbone = BUILDERS[backbone_name]()
    if ckpt["stage"] == 1:
        head.load_state_dict(ckpt["model"])
    else:
        graph = EncoderGraph(backbone, head)
        graph.load_state_dict(ckpt["model"])
    out = Path(path) if path is not None else checkpoint.with_name("model.onnx")
    sidecar = {"name": name or cfg["export"]["name"] or cfg["name"], "version": version,
               "backbone": backbone_name, "head": cfg["head"]["kind"], "labels": cfg["data"]["labels"],
               "classes": len(ckpt["classes"]), "stage": ckpt["stage"], "epoch": ckpt["best"]["epoch"],
               "checkpoint": str(checkpoint)}
    export_encoder(backbone, head, out, preprocess=spec, sidecar=sidecar, example=example)
    return out

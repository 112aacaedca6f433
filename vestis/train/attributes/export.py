"""Export of a trained attribute model: an ONNX graph and its sidecar JSON.

The graph takes the backbone's ``feature_map_14`` (or ``feature_map``) and ``embedding`` and returns
``attribute_embeddings`` (N x attributes x dim), so one backbone pass serves the global search and
every attribute (see :mod:`vestis.encoders.attribute_encoder`, which reads it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from vestis.encoders.attribute_encoder import MODEL_KIND, OUTPUT
from vestis.encoders.onnx_encoder import EMBEDDING, FEATURE_MAPS
from vestis.errors import VestisError
from vestis.train.attributes.embedder import AttributeEmbedder, make_head
from vestis.train.config import config_from_dict
from vestis.train.export import export_module
from vestis.train.trainer import load_checkpoint


class AttributeGraph(nn.Module):
    """(feature map, global embedding) -> every attribute's embedding (N x A x dim)."""

    def __init__(self, head: AttributeEmbedder):
        super().__init__()
        self.head = head

    def forward(self, feature_map: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.head.all_attributes(feature_map, embedding if self.head.global_dim else None)


def load_head(checkpoint: str | Path) -> tuple[AttributeEmbedder, dict[str, Any]]:
    """The trained head of an attribute-model checkpoint, and the checkpoint."""
    ckpt = load_checkpoint(checkpoint)
    meta = ckpt.get("attribute_model")
    if meta is None:
        raise VestisError(f"{checkpoint} is not an attribute-model checkpoint")
    cfg = config_from_dict(ckpt["config"])
    head = make_head(cfg, len(meta["attributes"]), meta["channels"], meta["global_dim"])
    head.load_state_dict({k.removeprefix("head."): v for k, v in ckpt["model"].items()})
    return head.eval(), ckpt


def export_attribute_model(
    checkpoint: str | Path, path: str | Path | None = None, *, name: str | None = None, version: str = "1"
) -> Path:
    """Export an attribute-model checkpoint to ONNX (inputs ``feature_map_14`` or ``feature_map``,
    and ``embedding``; output ``attribute_embeddings``) with its sidecar JSON, checked against
    PyTorch by :func:`vestis.train.export.export_module`."""
    head, ckpt = load_head(checkpoint)
    cfg = ckpt["config"]
    out = Path(path) if path is not None else Path(checkpoint).with_name("model.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    map_name = FEATURE_MAPS[cfg["model"]["feature_map"]]
    side = 14 if cfg["model"]["feature_map"] == "14x14" else 7
    gen = torch.Generator().manual_seed(0)
    example = (
        torch.rand(3, head.in_dim, side, side, generator=gen) * 6,
        F.normalize(torch.randn(3, max(head.global_dim, 1), generator=gen), dim=1),
    )
    diff = export_module(AttributeGraph(head), example, out, [map_name, EMBEDDING], [OUTPUT])
    meta = ckpt["attribute_model"]
    sidecar = {
        "kind": MODEL_KIND,
        "name": name or cfg["export"]["name"] or cfg["name"],
        "version": version,
        "backbone": ckpt["backbone"],
        "backbone_version": ckpt["encoder_version"],
        "feature_map": map_name,
        "attributes": meta["attributes"],
        "values": meta["values"],
        "dim": head.dim,
        "epoch": ckpt["best"]["epoch"],
        "checkpoint": str(checkpoint),
        "config": {k: cfg[k] for k in ("model", "head")},
        "onnx_max_abs_diff": diff,
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    return out

"""The embedding head and its losses.

The head maps backbone features to a ``dim``-d embedding: Linear -> BatchNorm1d (the "BN-neck"
of re-identification models), L2-normalised at inference. Losses, miners and the M-per-class
sampler come from pytorch-metric-learning (pml):

- ``arcface`` / ``subcenter-arcface`` / ``cosface``: additive angular / cosine margin softmax over
  the training classes (pml keeps the class weights inside the loss, so they are trained too);
- ``triplet``: triplet margin loss on mined triplets (``batch-hard`` or ``semi-hard``);
- ``ce``: a linear classifier on the BN output with cross-entropy;
- ``ce+triplet``: cross-entropy + ``triplet_weight`` x triplet.

Two ways to keep what the backbone knew (the head otherwise learns the training labels and can
lose the general visual structure that makes the backbone useful on other photos): a
:class:`SimilarityDistillation` term during training, and a retrieval embedding that keeps the
backbone feature beside the head's output (``backbone_weight``).
"""

from __future__ import annotations

import math

import torch
from pytorch_metric_learning import losses, miners
from torch import nn
from torch.nn import functional as F

from vestis.train.config import HeadConfig

DEFAULT_MARGINS = {"arcface": 0.5, "subcenter-arcface": 0.5, "cosface": 0.35}  # radians / cosine


class EmbeddingHead(nn.Module):
    """Linear -> BatchNorm1d. ``forward`` returns the un-normalised BN output (what the losses
    take); ``embed`` the L2-normalised embedding used for retrieval: with ``backbone_weight`` w > 0,
    ``[sqrt(w) b, sqrt(1 - w) h]`` of the backbone feature b, centred on ``centre`` (the mean
    training feature, :meth:`set_centre`) and normalised, and the normalised head output h (unit
    length; its cosine similarity is w x the centred backbone's + (1 - w) x the head's). Centring
    removes what every catalogue image shares, which would otherwise make all pairs look alike."""

    def __init__(self, in_dim: int, dim: int = 256, backbone_weight: float = 0.0):
        super().__init__()
        self.in_dim, self.dim, self.backbone_weight = in_dim, dim, backbone_weight
        self.linear = nn.Linear(in_dim, dim, bias=False)
        self.bn = nn.BatchNorm1d(dim)
        if backbone_weight:
            self.register_buffer("centre", torch.zeros(in_dim))

    def set_centre(self, features: torch.Tensor) -> None:
        """Centre the backbone part of the retrieval embedding on the mean of ``features``."""
        self.centre.copy_(F.normalize(features, dim=1).mean(dim=0))

    @property
    def out_dim(self) -> int:
        """The size of the retrieval embedding."""
        return self.dim + (self.in_dim if self.backbone_weight else 0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(features))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        head = F.normalize(self(features), dim=1)
        if not self.backbone_weight:
            return head
        w = self.backbone_weight
        backbone = F.normalize(F.normalize(features, dim=1) - self.centre, dim=1)
        return torch.cat([math.sqrt(w) * backbone, math.sqrt(1 - w) * head], dim=1)


class SimilarityDistillation(nn.Module):
    """``weight`` x the mean over a batch of 1 - r, where r is the correlation between one item's
    cosine similarities to the others under the head and under the backbone features it comes
    from: the head may pull classes apart but keeps the backbone's order of neighbours. A
    correlation, not the similarities themselves: the BatchNorm head centres its outputs (random
    pairs near 0) where backbone features of one domain are all alike (0.5 and more)."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = weight

    def forward(self, features: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        n = len(features)
        off = ~torch.eye(n, dtype=torch.bool, device=features.device)
        rows = []
        for x in (features, embeddings):
            x = F.normalize(x, dim=1)
            sim = (x @ x.T)[off].reshape(n, n - 1)
            sim = sim - sim.mean(dim=1, keepdim=True)
            rows.append(F.normalize(sim, dim=1))
        return self.weight * (1 - (rows[0] * rows[1]).sum(dim=1)).mean()


class HeadLoss(nn.Module):
    """The training objective of one head kind over ``num_classes`` classes.

    ``forward(embeddings, labels)`` returns the total loss and its named parts. Its parameters
    (margin-softmax class weights, classifier) are trained with the head."""

    def __init__(self, cfg: HeadConfig, num_classes: int):
        super().__init__()
        self.kind, self.num_classes = cfg.kind, num_classes
        self.triplet_weight = cfg.triplet_weight
        margin = cfg.margin if cfg.margin is not None else DEFAULT_MARGINS.get(cfg.kind)
        self.margin_loss: nn.Module | None = None
        self.classifier: nn.Linear | None = None
        self.triplet: nn.Module | None = None
        self.miner: nn.Module | None = None
        if cfg.kind == "arcface":  # pml takes the angular margin in degrees
            self.margin_loss = losses.ArcFaceLoss(num_classes, cfg.dim, margin=math.degrees(margin), scale=cfg.scale)
        elif cfg.kind == "subcenter-arcface":
            self.margin_loss = losses.SubCenterArcFaceLoss(num_classes=num_classes, embedding_size=cfg.dim,
                                                           margin=math.degrees(margin), scale=cfg.scale,
                                                           sub_centers=cfg.sub_centers)
        elif cfg.kind == "cosface":
            self.margin_loss = losses.CosFaceLoss(num_classes, cfg.dim, margin=margin, scale=cfg.scale)
        if cfg.kind in ("ce", "ce+triplet"):
            self.classifier = nn.Linear(cfg.dim, num_classes, bias=False)
        if cfg.kind in ("triplet", "ce+triplet"):
            self.triplet = losses.TripletMarginLoss(margin=cfg.triplet_margin)
            if cfg.miner == "batch-hard":
                self.miner = miners.BatchHardMiner()
            elif cfg.miner == "semi-hard":
                self.miner = miners.TripletMarginMiner(margin=cfg.triplet_margin, type_of_triplets="semihard")

    @property
    def needs_m_per_class(self) -> bool:
        """Triplet losses need several samples of each class in a batch."""
        return self.triplet is not None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        parts: dict[str, torch.Tensor] = {}
        if self.margin_loss is not None:
            parts[self.kind] = self.margin_loss(embeddings, labels)
        if self.classifier is not None:
            parts["ce"] = F.cross_entropy(self.classifier(embeddings), labels)
        if self.triplet is not None:
            pairs = self.miner(embeddings, labels) if self.miner is not None else None
            weight = self.triplet_weight if self.classifier is not None else 1.0
            parts["triplet"] = weight * self.triplet(embeddings, labels, pairs)
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

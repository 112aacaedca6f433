"""The embedding head and its losses.

The head maps backbone features to a ``dim``-d embedding: Linear -> BatchNorm1d (the "BN-neck"
of re-identification models), L2-normalised at inference. Losses, miners and the M-per-class
sampler come from pytorch-metric-learning (pml):

- ``arcface`` / ``subcenter-arcface`` / ``cosface``: additive angular / cosine margin softmax over
  the training classes (pml keeps the class weights inside the loss, so they are trained too);
- ``triplet``: triplet margin loss on mined triplets (``batch-hard`` or ``semi-hard``);
- ``ce``: a classifier on the head's output with cross-entropy: linear, or with ``classifier:
  cosine`` the normalised softmax (``scale`` x the cosine to each class weight), which trains the
  directions that cosine retrieval compares; ``margin`` m subtracts m from the cosine to the
  item's own class (CosFace's additive margin, default 0); or with ``classifier:
  subcenter-arcface`` sub-center ArcFace's margin softmax (``sub_centers`` weights per class);
- ``ce+triplet``: cross-entropy + ``triplet_weight`` x triplet.

Ways to keep what the backbone knew (the head otherwise learns the training labels and can lose
the general visual structure that makes the backbone useful on other photos): a
:class:`SimilarityDistillation` term during training; a retrieval embedding that keeps the
backbone feature beside the head's output (``backbone_weight``); a residual head that starts as
the identity, an :class:`IdentityAnchor` penalty that keeps it near, and interpolation of its
trained weights with the identity (``interpolate``).
"""

from __future__ import annotations

import math

import torch
from pytorch_metric_learning import losses, miners
from torch import nn
from torch.nn import functional as F

from vestis.errors import VestisError
from vestis.train.config import CE_KINDS, TRIPLET_KINDS, HeadConfig

# by head kind, or by classifier for the ce kinds: radians (ArcFace) / cosine (CosFace, cosine)
DEFAULT_MARGINS = {"arcface": 0.5, "subcenter-arcface": 0.5, "cosface": 0.35, "cosine": 0.0}


class EmbeddingHead(nn.Module):
    """The head. ``forward`` returns the un-normalised embedding the losses take; ``embed`` the
    L2-normalised retrieval embedding. Two forms:

    - projection (default): Linear -> BatchNorm1d to ``dim``;
    - ``residual``: the identity plus a learned correction of rank ``dim`` (at most ``in_dim``),
      ``z + A z`` with z the backbone feature centred on ``centre`` and normalised, A = up @ down,
      up starting at zero: the head starts as the centred backbone and keeps its size. The
      retrieval embedding uses ``z + interpolate x A z``, the trained weights interpolated with
      the identity (1: the trained head, 0: the centred backbone).

    With ``backbone_weight`` w > 0 the retrieval embedding is ``[sqrt(w) b, sqrt(1 - w) h]`` of the
    backbone feature b, centred on ``centre`` and normalised, and the normalised head output h
    (unit length; its cosine similarity is w x the centred backbone's + (1 - w) x the head's).
    ``centre`` is the mean training feature (:meth:`set_centre`): centring removes what every
    catalogue image shares, which would otherwise make all pairs look alike."""

    def __init__(self, in_dim: int, dim: int = 256, backbone_weight: float = 0.0, *, residual: bool = False,
                 interpolate: float = 1.0):
        super().__init__()
        self.in_dim, self.backbone_weight, self.residual, self.interpolate = in_dim, backbone_weight, residual, interpolate
        if residual:
            self.dim, self.rank = in_dim, min(dim, in_dim)
            self.down = nn.Linear(in_dim, self.rank, bias=False)
            self.up = nn.Linear(self.rank, in_dim, bias=False)
            nn.init.zeros_(self.up.weight)
        else:
            self.dim = dim
            self.linear = nn.Linear(in_dim, dim, bias=False)
            self.bn = nn.BatchNorm1d(dim)
        if backbone_weight or residual:
            self.register_buffer("centre", torch.zeros(in_dim))

    @classmethod
    def from_config(cls, in_dim: int, cfg: HeadConfig) -> EmbeddingHead:
        return cls(in_dim, cfg.dim, cfg.backbone_weight, residual=cfg.residual, interpolate=cfg.interpolate)

    @property
    def needs_centre(self) -> bool:
        return hasattr(self, "centre")

    def set_centre(self, features: torch.Tensor) -> None:
        """Centre the backbone feature on the mean of ``features``."""
        self.centre.copy_(F.normalize(features, dim=1).mean(dim=0))

    @property
    def out_dim(self) -> int:
        """The size of the retrieval embedding."""
        return self.dim + (self.in_dim if self.backbone_weight else 0)

    def centred(self, features: torch.Tensor) -> torch.Tensor:
        """The backbone feature, normalised, centred and normalised again."""
        return F.normalize(F.normalize(features, dim=1) - self.centre, dim=1)

    def correction_norm(self) -> torch.Tensor:
        """The squared Frobenius norm of a residual head's correction A = up @ down (its distance
        from the identity), without forming A."""
        return ((self.up.weight.T @ self.up.weight) * (self.down.weight @ self.down.weight.T)).sum()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.residual:
            z = self.centred(features)
            return z + self.up(self.down(z))
        return self.bn(self.linear(features))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        if self.residual:
            z = self.centred(features)
            head = F.normalize(z + self.interpolate * self.up(self.down(z)), dim=1)
        else:
            head = F.normalize(self(features), dim=1)
        if not self.backbone_weight:
            return head
        w = self.backbone_weight
        return torch.cat([math.sqrt(w) * self.centred(features), math.sqrt(1 - w) * head], dim=1)


class IdentityAnchor:
    """``weight`` x the squared distance of a residual head from the identity (L2-SP: the
    penalty pulls the trained weights towards their start, where the head is the backbone). Any
    head with a ``correction_norm()`` (the residual attribute model too)."""

    def __init__(self, head: nn.Module, weight: float):
        self.head, self.weight = head, weight

    def __call__(self, features: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return self.weight * self.head.correction_norm()


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
    (margin-softmax class weights, classifier) are trained with the head. ``embedding_size`` is
    the size of the head's output (default ``cfg.dim``)."""

    def __init__(self, cfg: HeadConfig, num_classes: int, embedding_size: int | None = None):
        super().__init__()
        size = embedding_size or cfg.dim
        self.kind, self.num_classes = cfg.kind, num_classes
        self.triplet_weight = cfg.triplet_weight
        margin_of = cfg.classifier if cfg.kind in CE_KINDS else cfg.kind
        margin = cfg.margin if cfg.margin is not None else DEFAULT_MARGINS.get(margin_of)
        self.margin_loss: nn.Module | None = None
        self.classifier: nn.Module | None = None  # ce kinds: nn.Linear, or pml's normalised softmax (a loss)
        self.triplet: nn.Module | None = None
        self.miner: nn.Module | None = None
        if cfg.kind == "arcface":  # pml takes the angular margin in degrees
            self.margin_loss = losses.ArcFaceLoss(num_classes, size, margin=math.degrees(margin), scale=cfg.scale)
        elif cfg.kind == "subcenter-arcface":
            self.margin_loss = self._subcenter_arcface(cfg, num_classes, size, margin)
        elif cfg.kind == "cosface":
            self.margin_loss = losses.CosFaceLoss(num_classes, size, margin=margin, scale=cfg.scale)
        if cfg.kind in CE_KINDS:
            if cfg.classifier == "cosine":
                # CosFace's loss: with margin 0 (the default) the normalised softmax
                self.classifier = losses.CosFaceLoss(num_classes, size, margin=margin, scale=cfg.scale)
            elif cfg.classifier == "subcenter-arcface":
                self.classifier = self._subcenter_arcface(cfg, num_classes, size, margin)
            else:
                self.classifier = nn.Linear(size, num_classes, bias=False)
        if cfg.kind in TRIPLET_KINDS:
            self.triplet = losses.TripletMarginLoss(margin=cfg.triplet_margin)
            if cfg.miner == "batch-hard":
                self.miner = miners.BatchHardMiner()
            elif cfg.miner == "semi-hard":
                self.miner = miners.TripletMarginMiner(margin=cfg.triplet_margin, type_of_triplets="semihard")

    @staticmethod
    def _subcenter_arcface(cfg: HeadConfig, num_classes: int, size: int, margin: float) -> nn.Module:
        """Sub-center ArcFace's margin softmax (pml takes the angular margin in degrees)."""
        return losses.SubCenterArcFaceLoss(num_classes=num_classes, embedding_size=size,
                                           margin=math.degrees(margin), scale=cfg.scale,
                                           sub_centers=cfg.sub_centers)

    @torch.no_grad()
    def init_class_weights(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Start each class weight of the margin softmax at the normalised mean of its class's
        ``embeddings`` (the head's output of the training items): the head is then first trained
        from a nearest-class-mean classifier rather than random classes, which distorts its
        features less (linear probing before fine-tuning)."""
        if not isinstance(self.margin_loss, losses.ArcFaceLoss | losses.CosFaceLoss):
            raise VestisError(f"class weights start at class means for arcface and cosface heads, not {self.kind}")
        sums = torch.zeros(self.num_classes, embeddings.shape[1]).index_add_(0, labels, F.normalize(embeddings, dim=1))
        # a class of one item would sit exactly on its weight, where ArcFace's arccos has no gradient:
        # such classes (and empty ones) keep their random start
        many = torch.bincount(labels, minlength=self.num_classes) >= 2
        self.margin_loss.W[:, many] = F.normalize(sums[many], dim=1).T.to(self.margin_loss.W)

    @property
    def needs_m_per_class(self) -> bool:
        """Triplet losses need several samples of each class in a batch."""
        return self.triplet is not None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        parts: dict[str, torch.Tensor] = {}
        if self.margin_loss is not None:
            parts[self.kind] = self.margin_loss(embeddings, labels)
        if isinstance(self.classifier, nn.Linear):
            parts["ce"] = F.cross_entropy(self.classifier(embeddings), labels)
        elif self.classifier is not None:
            parts["ce"] = self.classifier(embeddings, labels)
        if self.triplet is not None:
            pairs = self.miner(embeddings, labels) if self.miner is not None else None
            weight = self.triplet_weight if self.classifier is not None else 1.0
            parts["triplet"] = weight * self.triplet(embeddings, labels, pairs)
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

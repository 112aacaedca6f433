"""The attribute-specific triplet loss of the attribute model."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class AttributeTripletLoss(nn.Module):
    """Triplet ranking loss on cosine similarity, negatives from the anchor's attribute only.

    ``labels`` are (attribute, value) class indices; ``class_attribute[c]`` is the attribute of
    class c. For each anchor, positives are the other pairs of its class and negatives the pairs of
    the same attribute with another value. ``batch_hard`` takes the least similar positive and the
    most similar negative; otherwise the loss averages every valid triplet that violates the margin."""

    needs_m_per_class = True

    def __init__(self, class_attribute: list[int], margin: float = 0.2, batch_hard: bool = True):
        super().__init__()
        self.margin, self.batch_hard = margin, batch_hard
        self.register_buffer(
            "class_attribute", torch.as_tensor(class_attribute, dtype=torch.long), persistent=False
        )

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        emb = F.normalize(embeddings, dim=1)
        sim = emb @ emb.T
        attr = self.class_attribute[labels]
        same_attr = attr[:, None] == attr[None, :]
        same_class = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos, neg = same_class & ~eye, same_attr & ~same_class
        if self.batch_hard:
            valid = pos.any(1) & neg.any(1)
            hardest_pos = sim.masked_fill(~pos, math.inf).min(1).values
            hardest_neg = sim.masked_fill(~neg, -math.inf).max(1).values
            losses = F.relu(self.margin - hardest_pos + hardest_neg)[valid]
        else:
            triplets = pos[:, :, None] & neg[:, None, :]
            all_losses = F.relu(self.margin - sim[:, :, None] + sim[:, None, :])[triplets]
            losses = all_losses[all_losses > 0]
        loss = losses.mean() if len(losses) else sim.sum() * 0.0
        return loss, {"triplet": float(loss.detach())}

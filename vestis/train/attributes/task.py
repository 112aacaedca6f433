"""The trainer's task for the attribute model: (item, attribute) pairs, their classes and model.

A training sample is an (item, attribute) pair whose class is the attribute's value; batches hold
``head.m_per_class`` pairs of each of several (attribute, value) classes, and the loss is a
triplet ranking loss on cosine similarity, ``max(0, margin - cos(a, p) + cos(a, n))``, where the
positive shares the anchor's value of the attribute and the negative is a pair of the SAME
attribute with another value (attribute-specific triplets; batch-hard mining with ``head.miner:
batch-hard``, every valid triplet with ``none``). Model selection uses the attribute-specific
mAP@10 of the validation split.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vestis.train.attributes.embedder import AttributeEmbedder, make_head
from vestis.train.attributes.features import AttributeData, RowView
from vestis.train.attributes.loss import AttributeTripletLoss
from vestis.train.config import AttributeRunConfig
from vestis.train.heads import IdentityAnchor
from vestis.train.batches import PairIndices
from vestis.train.task import TrainingTask, class_labels


class PairModel(nn.Module):
    """The trainer's model: a batch of (item, attribute) pair indices -> their embeddings, the
    cached features gathered from the (memory-mapped) arrays. Only ``head`` has parameters."""

    def __init__(
        self,
        head: AttributeEmbedder,
        maps: np.ndarray | RowView,
        global_vecs: np.ndarray | RowView | None,
        pair_item: np.ndarray,
        pair_attribute: np.ndarray,
    ):
        super().__init__()
        self.head = head
        self.maps, self.global_vecs = maps, global_vecs
        self.pair_item, self.pair_attribute = pair_item, pair_attribute

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        index = pairs.cpu().numpy()
        rows = self.pair_item[index]
        unique, inverse = np.unique(rows, return_inverse=True)  # sorted: sequential reads of the memory map
        device = self.head.project.weight.device
        maps = torch.from_numpy(np.asarray(self.maps[unique], np.float32)).to(device)
        glob = None
        if self.global_vecs is not None:
            glob = torch.from_numpy(np.asarray(self.global_vecs[unique], np.float32)).to(device)
        attrs = torch.from_numpy(self.pair_attribute[index]).to(device)
        return self.head(maps, glob, attrs, torch.from_numpy(inverse).to(device))


def attribute_task(cfg: AttributeRunConfig, data: AttributeData, item_split: np.ndarray) -> TrainingTask:
    """The trainer's task over (item, attribute) pairs; (attribute, value) classes with fewer than
    two training pairs cannot give a positive and are not anchors. With ``model.max_train_items``
    only a seeded sample of the training items is used."""
    split = item_split[data.pair_item].copy()
    train_items = np.flatnonzero(np.isin(item_split.astype(str), cfg.train.train_splits))
    if 0 < cfg.model.max_train_items < len(train_items):
        rng = np.random.default_rng(cfg.train.seed)
        unused = np.setdiff1d(train_items, rng.choice(train_items, cfg.model.max_train_items, replace=False))
        split[np.isin(data.pair_item, unused)] = "unused"  # neither trained on nor in the validation gallery
    groups = data.groups
    train = np.isin(split.astype(str), cfg.train.train_splits)
    counts: dict[str, int] = {}
    for g in groups[train]:
        counts[g] = counts.get(g, 0) + 1
    anchors = np.array([counts.get(g, 0) >= 2 for g in groups])
    classes, labels = class_labels(np.where(anchors, groups, None), split, cfg.train.train_splits)
    class_attribute = [data.attributes.index(c.partition("=")[0]) for c in classes]
    head = make_head(cfg, len(data.attributes), data.maps.shape[1], data.global_vecs.shape[1])
    if head.residual:
        head.fit_start(torch.from_numpy(np.asarray(data.global_vecs[train_items], np.float32)))
    model = PairModel(
        head,
        data.maps,
        data.global_vecs if cfg.model.global_branch else None,
        data.pair_item,
        data.pair_attribute,
    )
    criterion = AttributeTripletLoss(class_attribute, cfg.head.triplet_margin, cfg.head.miner == "batch-hard")
    params = [{"params": list(head.parameters()), "lr": cfg.train.lr}]
    meta = {
        "attributes": data.attributes,
        "channels": head.in_dim,
        "global_dim": head.global_dim,
        "values": {
            a: sorted(set(data.pair_value[data.pair_attribute == i])) for i, a in enumerate(data.attributes)
        },
    }
    return TrainingTask(
        1,
        model,
        head,
        criterion,
        params,
        lambda rows, augment: PairIndices(rows),
        data.items,
        groups,
        split,
        classes,
        labels,
        data.items.encoder_name,
        partition=data.pair_attribute,
        checkpoint_extra={"attribute_model": meta},
        regulariser=IdentityAnchor(head, cfg.head.anchor) if cfg.head.anchor else None,
    )

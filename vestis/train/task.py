"""What one training run trains: the task that every kind of run builds and the trainer consumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from vestis.errors import VestisError
from vestis.train.features import Items


@dataclass
class TrainingTask:
    """Everything one run trains, built by :func:`vestis.train.command.feature_task` (stage 1),
    :func:`vestis.train.finetune.finetune_task` (stage 2),
    :func:`vestis.train.attributes.task.attribute_task` (the attribute model) or
    :func:`vestis.train.joint.joint_task` (the joint text-image space).

    A row is a training sample (an item; an (item, attribute) or (item, text) pair).
    ``model`` maps a batch of inputs to the head's un-normalised embeddings; ``inputs(rows,
    augment)`` makes a dataset of the rows; ``labels`` is the class index of every row (-1 when its
    group is not a training class); ``split`` its split name. ``regulariser(inputs, embeddings)``,
    when given, is added to the training loss (e.g. similarity distillation). With ``partition``, a validation
    query only searches the rows of its own partition (the same attribute), and the mAP is averaged
    over partitions weighted by their queries. ``checkpoint_extra`` is stored in every checkpoint."""

    stage: int
    model: nn.Module
    head: nn.Module  # has ``in_dim`` and ``dim``
    criterion: nn.Module  # (embeddings, labels) -> (loss, named parts); has ``needs_m_per_class``
    param_groups: list[dict[str, Any]]
    inputs: Callable[[np.ndarray, bool], Dataset]
    items: Items
    groups: np.ndarray
    split: np.ndarray
    classes: list[str]
    labels: np.ndarray
    backbone: str
    partition: np.ndarray | None = None
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)
    regulariser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def rows(self, *splits: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.split.astype(str), splits))

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch."""
        embeddings = self.model(inputs)
        loss, _ = self.criterion(embeddings, labels)
        if self.regulariser is not None:
            loss = loss + self.regulariser(inputs, embeddings)
        return loss


def class_labels(groups: np.ndarray, split: np.ndarray, train_splits: list[str]) -> tuple[list[str], np.ndarray]:
    """Training classes (the sorted label groups of labelled training items) and each item's
    class index (-1 for items whose group is missing or not a training class)."""
    train = np.isin(split.astype(str), train_splits) & np.array([g is not None for g in groups])
    classes = sorted({str(g) for g in groups[train]})
    if len(classes) < 2:
        raise VestisError(f"the training split has {len(classes)} label group(s); at least 2 are needed")
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([-1 if g is None else index.get(str(g), -1) for g in groups], np.int64)

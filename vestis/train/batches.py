"""Training batches: datasets of a task's rows, M-per-class samplers and the seeded loader.

Triplet losses need batches with several items of each class (``head.m_per_class``): their classes
are drawn uniformly (pytorch-metric-learning's ``MPerClassSampler``) or in proportion to their size
(:class:`ClassesBySizeSampler`); other losses take shuffled items. Every epoch reseeds the samplers
from (seed, epoch) (:func:`seed_epoch`), so a resumed run goes on exactly as the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from vestis.errors import VestisError
from vestis.train.config import RunConfig, TrainConfig
from vestis.train.task import TrainingTask


class ArrayDataset(Dataset):
    """Rows of a feature matrix as float32 tensors."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, np.float32))

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.vectors[i]


class PairIndices(Dataset):
    """Row indices as tensors: the inputs of models that gather their own features (the attribute
    model's (item, attribute) pairs, the joint model's (item, text) pairs)."""

    def __init__(self, pairs: np.ndarray):
        self.pairs = torch.as_tensor(pairs, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.pairs[i]


class Labelled(Dataset):
    """Pairs a dataset of inputs with class indices."""

    def __init__(self, inputs: Dataset, labels: np.ndarray):
        self.inputs, self.labels = inputs, torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor]:
        return self.inputs[i], self.labels[i]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inputs, "set_epoch"):
            self.inputs.set_epoch(epoch)


def batch_size_for(task: TrainingTask, train: TrainConfig, m: int) -> int:
    """The batch size used: M-per-class batches hold whole groups of ``m`` and at most every class."""
    if not task.criterion.needs_m_per_class:
        return train.batch_size
    size = min(train.batch_size, m * len(task.classes)) // m * m
    if size < 2 * m:
        raise VestisError(f"train.batch_size {train.batch_size} is too small for {m} samples per class "
                          f"(head.m_per_class): use at least {2 * m}")
    return size


class ClassesBySizeSampler(Sampler[int]):
    """M-per-class batches whose classes are drawn in proportion to their number of items
    (``head.class_sampling: by-size``): ``batch_size / m`` draws of a class per batch (a frequent
    class may be drawn twice), ``m`` items of each (with repeats when a class has fewer). pml's
    ``MPerClassSampler`` draws the classes uniformly, so a rare group is seen as often as a
    frequent one and the batches no longer follow the catalogue; here they do, as a shuffled
    epoch's would. ``length`` indices per epoch; the draws follow torch's random state."""

    def __init__(self, labels: np.ndarray, m: int, batch_size: int, length: int):
        _, group, sizes = np.unique(labels, return_inverse=True, return_counts=True)
        self.members = np.split(np.argsort(group, kind="stable"), np.cumsum(sizes)[:-1])  # items of each class
        self.p = sizes / sizes.sum()
        self.m, self.per_batch = m, batch_size // m
        self.batches = length // batch_size

    def __len__(self) -> int:
        return self.batches * self.per_batch * self.m

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
        for _ in range(self.batches):
            for c in rng.choice(len(self.members), self.per_batch, p=self.p):
                members = self.members[c]
                yield from rng.choice(members, self.m, replace=len(members) < self.m).tolist()


def train_loader(task: TrainingTask, cfg: RunConfig) -> DataLoader:
    """Batches of (inputs, class) over the labelled training items; M-per-class for triplet losses."""
    rows = task.rows(*cfg.train.train_splits)
    rows = rows[task.labels[rows] >= 0]
    dataset = Labelled(task.inputs(rows, True), task.labels[rows])
    size = batch_size_for(task, cfg.train, cfg.head.m_per_class)
    workers = loader_workers(task, cfg)
    if task.criterion.needs_m_per_class:
        length = max(len(rows), size)
        sampler = (MPerClassSampler(task.labels[rows], cfg.head.m_per_class, batch_size=size,
                                    length_before_new_iter=length)
                   if cfg.head.class_sampling == "uniform"
                   else ClassesBySizeSampler(task.labels[rows], cfg.head.m_per_class, size, length))
        return DataLoader(dataset, batch_size=size, sampler=sampler, drop_last=True, num_workers=workers)
    return DataLoader(dataset, batch_size=size, shuffle=True, drop_last=len(rows) > size, num_workers=workers,
                      generator=torch.Generator())


def loader_workers(task: TrainingTask, cfg: RunConfig) -> int:
    """Data-loading processes: images (stage 2) are decoded in ``finetune.workers``; features need none."""
    return cfg.finetune.workers if task.stage == 2 else 0


def seed_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Seed everything random in one epoch from (seed, epoch): makes resumed runs exact."""
    torch.manual_seed(seed * 100_003 + epoch)
    np.random.seed((seed * 100_003 + epoch) % 2**32)  # pytorch-metric-learning's sampler uses np.random
    if loader.generator is not None:
        loader.generator.manual_seed(seed * 100_003 + epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)

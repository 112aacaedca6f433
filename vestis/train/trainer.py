"""The training loop shared by both stages: AdamW, a per-step LR schedule, validation mAP@10 after
every epoch, early stopping, checkpoints and resume, a progress bar and a curves plot.

Model selection uses the validation split only: its items query the training and validation
items (themselves excluded), relevant = the same label group. The test split is not embedded,
scored or even passed to the trainer.

Every epoch reseeds the samplers from (seed, epoch), so a run resumed from ``last.pt`` goes on
exactly as the uninterrupted run would have.

With ``train.average_from`` the model validated, kept as best and exported is a stochastic weight
average (Izmailov et al., 2018; :class:`torch.optim.swa_utils.AveragedModel`): the uniform average
of the weights at the end of every epoch from that one on, which lies in a flatter region of the
loss than any one of them. Training itself goes on from the last weights. Buffers (BatchNorm
statistics, a residual head's centre) are those of the last weights.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from vestis.errors import VestisError
from vestis.eval.protocols import rank, score_ranking
from vestis.train.config import RunConfig, TrainConfig, check_split_usage
from vestis.train.features import Items

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "vestis-train-checkpoint/1"
VAL_METRIC = "mAP@10"


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


@dataclass
class TrainingTask:
    """Everything one run trains, built by :func:`vestis.train.command.feature_task` (stage 1),
    :func:`vestis.train.finetune.finetune_task` (stage 2) or
    :func:`vestis.train.attributes.task.attribute_task` (the attribute model).

    A row is a training sample (an item; for the attribute model an (item, attribute) pair).
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


def resolve_device(name: str) -> torch.device:
    """``auto`` is cuda when a GPU is usable, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise VestisError(f"train.device: {e}") from e


def class_labels(groups: np.ndarray, split: np.ndarray, train_splits: list[str]) -> tuple[list[str], np.ndarray]:
    """Training classes (the sorted label groups of labelled training items) and each item's
    class index (-1 for items whose group is missing or not a training class)."""
    train = np.isin(split.astype(str), train_splits) & np.array([g is not None for g in groups])
    classes = sorted({str(g) for g in groups[train]})
    if len(classes) < 2:
        raise VestisError(f"the training split has {len(classes)} label group(s); at least 2 are needed")
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([-1 if g is None else index.get(str(g), -1) for g in groups], np.int64)


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


@torch.no_grad()
def embed_rows(task: TrainingTask, rows: np.ndarray, device: torch.device, batch_size: int = 256,
               normalise: bool = True, workers: int = 0) -> np.ndarray:
    """Embeddings of the items at ``rows`` (model in eval mode, no augmentation)."""
    task.model.eval()
    loader = DataLoader(task.inputs(rows, False), batch_size=batch_size, num_workers=workers)
    out = [task.model(x.to(device)) for x in loader]
    emb = torch.cat(out) if out else torch.zeros(0, task.head.dim)
    return (nn.functional.normalize(emb, dim=1) if normalise else emb).cpu().numpy()


def retrieval_ranking(vectors: np.ndarray, queries: np.ndarray, gallery: np.ndarray,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """Queries (row positions) search the gallery rows: the ranking (gallery positions) and each
    query's own gallery position (-1 when not in it), which it never finds."""
    position = {r: i for i, r in enumerate(gallery.tolist())}
    exclude = np.array([position.get(r, -1) for r in queries.tolist()], np.int64)
    return rank(vectors[queries], vectors[gallery], min(k, len(gallery)), exclude_self=exclude)[1], exclude


def retrieval_scores(vectors: np.ndarray, groups: np.ndarray, queries: np.ndarray, gallery: np.ndarray,
                     ks: tuple[int, ...] = (1, 10, 50)) -> dict[str, float | int]:
    """The metrics of :func:`retrieval_ranking` (relevant: the same group)."""
    ranking, exclude = retrieval_ranking(vectors, queries, gallery, max(ks))
    return score_ranking(ranking, groups[queries], groups[gallery], ks, exclude_self=exclude)


def make_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: cosine decay to 0, one-cycle (warm-up then anneal), or constant."""
    if train.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if train.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def make_optimizer(task: TrainingTask, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the task's parameter groups (each with its own learning rate)."""
    return torch.optim.AdamW([dict(g) for g in task.param_groups], lr=train.lr, weight_decay=train.weight_decay)


class Trainer:
    """Runs :meth:`fit` for one task; writes the ``last.pt`` and ``best.pt`` checkpoints (with the
    per-epoch history) and ``curves.png`` into ``run_dir``."""

    def __init__(self, cfg: RunConfig, task: TrainingTask, run_dir: Path):
        check_split_usage(cfg.train)
        self.cfg, self.task, self.run_dir = cfg, task, Path(run_dir)
        self.device = resolve_device(cfg.train.device)
        task.model.to(self.device)
        task.criterion.to(self.device)
        self.loader = train_loader(task, cfg)
        self.steps_per_epoch = len(self.loader)
        self.optimizer = make_optimizer(task, cfg.train)
        self.scheduler = make_scheduler(self.optimizer, cfg.train, cfg.train.epochs * self.steps_per_epoch)
        self.eval_rows = np.concatenate([task.rows(*cfg.train.train_splits), task.rows(cfg.train.val_split)])
        self.val_rows = task.rows(cfg.train.val_split)
        self.val_rows = self.val_rows[np.array([g is not None for g in task.groups[self.val_rows]], bool)]
        if len(self.val_rows) == 0:
            raise VestisError(f"the {cfg.train.val_split!r} split has no labelled item to validate on")
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"epoch": 0, VAL_METRIC: -math.inf}
        self.bad_epochs = 0
        self.epoch = 0  # epochs completed
        self._best_state: dict[str, Any] | None = None
        self.average: AveragedModel | None = None  # the weight average, from train.average_from on

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "stage": self.task.stage,
            "epoch": self.epoch,
            "model": self.task.model.state_dict(),
            "criterion": self.task.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": self.cfg.to_dict(),
            "classes": list(self.task.classes),
            "in_dim": self.task.head.in_dim,
            "backbone": self.task.backbone,
            "encoder_version": self.task.items.encoder_version,
            "history": list(self.history),
            "best": dict(self.best),
            "bad_epochs": self.bad_epochs,
            **({"average": self.average.state_dict()} if self.average is not None else {}),
            **self.task.checkpoint_extra,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by this trainer (same head, classes and data)."""
        ckpt = load_checkpoint(path, self.device)
        if ckpt["classes"] != list(self.task.classes) or ckpt["stage"] != self.task.stage:
            raise VestisError(f"checkpoint {path} was trained on other classes or another stage; "
                              "resume needs the same data, labels and split")
        for section, key in (("head", "kind"), ("head", "dim"), ("head", "residual"), ("head", "classifier"),
                             ("head", "sub_centers"), ("train", "average_from")):
            current = getattr(getattr(self.cfg, section), key)
            default = getattr(type(getattr(self.cfg, section))(), key)
            saved = ckpt["config"][section].get(key, default)  # older checkpoints: the default
            if saved != current:
                raise VestisError(f"checkpoint {path} has {section}.{key}={saved!r}, the config says {current!r}")
        self.task.model.load_state_dict(ckpt["model"])
        if "average" in ckpt:
            self.average = AveragedModel(self.task.model)
            self.average.load_state_dict(ckpt["average"])
        self.task.criterion.load_state_dict(ckpt["criterion"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.history = ckpt["epoch"], ckpt["history"]
        self.best, self.bad_epochs = ckpt["best"], ckpt["bad_epochs"]
        best_file = self.run_dir / "best.pt"
        if best_file.exists():
            best = load_checkpoint(best_file, self.device)
            self._best_state = {"model": best["model"], "criterion": best["criterion"]}

    # ------------------------------------------------------------------ loop
    def swap_in_average(self) -> dict[str, Any] | None:
        """From epoch ``train.average_from`` on: add the weights to the average and put the average
        in the model. Returns the trained weights, to put back before training goes on (None when
        not averaging yet)."""
        start = self.cfg.train.average_from
        if not start or self.epoch < start:
            return None
        if self.average is None:
            self.average = AveragedModel(self.task.model)
        self.average.update_parameters(self.task.model)
        trained = copy.deepcopy(self.task.model.state_dict())
        self.task.model.load_state_dict(self.average.module.state_dict())  # its buffers follow the model's
        return trained

    def validate(self) -> dict[str, float]:
        """Validation loss (rows of training classes) and mAP@10 (validation queries)."""
        raw = embed_rows(self.task, self.eval_rows, self.device, normalise=False,
                         workers=loader_workers(self.task, self.cfg))
        vectors = nn.functional.normalize(torch.from_numpy(raw), dim=1).numpy()
        return {VAL_METRIC: self.validation_score(vectors), "val_loss": self.validation_loss(raw)}

    def validation_score(self, vectors: np.ndarray) -> float:
        """mAP@10 of the validation rows searching the training and validation rows (of their own
        partition, when the task has partitions), weighted by queries."""
        groups = self.task.groups[self.eval_rows]
        is_val = np.isin(self.eval_rows, self.val_rows)
        parts = (np.zeros(len(self.eval_rows), np.int64) if self.task.partition is None
                 else self.task.partition[self.eval_rows])
        scores, weights = [], []
        for part in np.unique(parts):
            gallery = np.flatnonzero(parts == part)
            queries = np.flatnonzero(is_val[gallery])
            if len(queries) == 0 or len(gallery) < 2:
                continue
            result = retrieval_scores(vectors[gallery], groups[gallery], queries, np.arange(len(gallery)), ks=(10,))
            if result.get("n_queries", 0):
                scores.append(result[VAL_METRIC])
                weights.append(result["n_queries"])
        return float(np.average(scores, weights=weights)) if scores else 0.0

    def validation_loss(self, raw: np.ndarray) -> float:
        """The loss over the validation rows of training classes (``raw``: embeddings of
        ``eval_rows``), in shuffled batch-sized chunks like the training batches."""
        position = {r: i for i, r in enumerate(self.eval_rows.tolist())}
        known = np.array([position[r] for r in self.val_rows[self.task.labels[self.val_rows] >= 0].tolist()],
                         np.int64)
        order = np.random.default_rng(self.cfg.train.seed).permutation(known)
        size = self.loader.batch_size or self.cfg.train.batch_size
        losses, weights = [], []
        self.task.criterion.eval()
        with torch.no_grad():
            for chunk in np.array_split(order, max(1, math.ceil(len(order) / size))):
                if len(chunk) < 2:
                    continue
                emb = torch.from_numpy(raw[chunk]).to(self.device)
                lab = torch.as_tensor(self.task.labels[self.eval_rows][chunk], device=self.device)
                losses.append(float(self.task.criterion(emb, lab)[0]))
                weights.append(len(chunk))
        return float(np.average(losses, weights=weights)) if losses else float("nan")

    def fit(self) -> dict[str, Any]:
        """Train until ``train.epochs`` or early stopping; leaves the best model in the task."""
        cfg, task = self.cfg.train, self.task
        if cfg.resume:
            self.resume(cfg.resume)
        start = time.perf_counter()
        bar = tqdm(total=cfg.epochs * self.steps_per_epoch, initial=self.epoch * self.steps_per_epoch,
                   desc=f"training {self.cfg.name}", unit="step", disable=None if cfg.progress else True)
        stopped_early = False
        try:
            while self.epoch < cfg.epochs and not stopped_early:
                epoch_start = time.perf_counter()
                seed_epoch(self.loader, cfg.seed, self.epoch)
                task.model.train()
                task.criterion.train()
                total, count = 0.0, 0
                for inputs, labels in self.loader:
                    inputs, labels = inputs.to(self.device), labels.to(self.device)
                    loss = task.loss(inputs, labels)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    self.scheduler.step()
                    total, count = total + loss.item() * len(labels), count + len(labels)
                    bar.update(1)
                    bar.set_postfix(epoch=self.epoch + 1, loss=f"{total / count:.4f}",
                                    val=f"{self.best[VAL_METRIC]:.3f}" if self.history else "-")
                self.epoch += 1
                trained = self.swap_in_average()
                record = {"epoch": self.epoch, "train_loss": total / max(count, 1), **self.validate(),
                          "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - epoch_start}
                if self.average is not None:
                    record["averaged_epochs"] = int(self.average.n_averaged)
                self.history.append(record)
                if record[VAL_METRIC] > self.best[VAL_METRIC]:
                    self.best = {"epoch": self.epoch, VAL_METRIC: record[VAL_METRIC]}
                    self.bad_epochs = 0
                    self._best_state = copy.deepcopy({"model": task.model.state_dict(),
                                                      "criterion": task.criterion.state_dict()})
                    self.save(self.run_dir / "best.pt")
                else:
                    self.bad_epochs += 1
                    stopped_early = 0 < cfg.patience <= self.bad_epochs
                if trained is not None:
                    task.model.load_state_dict(trained)  # training goes on from the trained weights
                self.save(self.run_dir / "last.pt")
                log.info("epoch %d: loss %.4f, val loss %.4f, val %s %.4f", self.epoch, record["train_loss"],
                         record["val_loss"], VAL_METRIC, record[VAL_METRIC])
        finally:
            bar.close()
        if self._best_state is not None:
            task.model.load_state_dict(self._best_state["model"])
            task.criterion.load_state_dict(self._best_state["criterion"])
        plot_curves(self.history, self.run_dir / "curves.png", self.best.get("epoch", 0), title=self.cfg.name)
        return {"epochs_run": self.epoch, "best_epoch": self.best["epoch"], f"val_{VAL_METRIC}": self.best[VAL_METRIC],
                "stopped_early": stopped_early, "train_seconds": time.perf_counter() - start,
                "history": self.history, "checkpoint": str(self.run_dir / "best.pt"),
                "curves": str(self.run_dir / "curves.png"), "batch_size": self.loader.batch_size,
                "steps_per_epoch": self.steps_per_epoch, "device": str(self.device)}


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :class:`Trainer` (tensors and plain Python values only)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise VestisError(f"no checkpoint at {path}") from None
    except Exception as e:  # torch raises pickle, zip and runtime errors of many kinds
        raise VestisError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise VestisError(f"{path} is not a vestis training checkpoint")
    return ckpt


def plot_curves(history: list[dict[str, float]], path: Path, best_epoch: int, *, title: str) -> None:
    """Training and validation loss, and validation mAP@10, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_map.plot(epochs, [h[VAL_METRIC] for h in history], "o-", color="tab:green")
    averaged = [h["epoch"] for h in history if "averaged_epochs" in h]
    if averaged:
        ax_map.axvspan(averaged[0] - 0.5, averaged[-1] + 0.5, color="tab:green", alpha=0.1,
                       label=f"weights averaged from epoch {averaged[0]}")
    if best_epoch:
        ax_map.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    if averaged or best_epoch:
        ax_map.legend()
    ax_map.set(xlabel="epoch", ylabel=VAL_METRIC, title=f"validation {VAL_METRIC}")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""The training loop shared by both stages: AdamW, a per-step LR schedule, validation mAP@10 after
every epoch, early stopping, checkpoints and resume, a progress bar and a curves plot.

Model selection uses the validation split only: its items query the training and validation
items (themselves excluded), relevant = the same label group. The test split is not embedded,
scored or even passed to the trainer.

Every epoch reseeds the samplers from (seed, epoch) (:mod:`vestis.train.batches`), so a run
resumed from ``last.pt`` goes on exactly as the uninterrupted run would have.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from vestis.errors import VestisError
from vestis.eval.protocols import score_ranking
from vestis.index.topk import exact_search
from vestis.train.batches import loader_workers, seed_epoch, train_loader
from vestis.train.config import RunConfig, TrainConfig, check_split_usage
from vestis.train.task import TrainingTask

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "vestis-train-checkpoint/1"
VAL_METRIC = "mAP@10"


def resolve_device(name: str) -> torch.device:
    """``auto`` is cuda when a GPU is usable, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise VestisError(f"train.device: {e}") from e


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
    return exact_search(vectors[queries], vectors[gallery], min(k, len(gallery)), exclude=exclude)[1], exclude


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

"""LR range test (Smith 2015, as in fastai): train for a few steps while the learning rate grows
exponentially from ``min_lr`` to ``max_lr``, record the smoothed loss, and suggest the learning
rate where the loss falls fastest (the most negative slope of loss vs log LR).

The model and loss weights are restored afterwards, so the test leaves no trace on training.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.train.config import RunConfig
from vestis.train.batches import seed_epoch, train_loader
from vestis.train.task import TrainingTask
from vestis.train.trainer import make_optimizer, resolve_device

SMOOTHING = 0.98  # exponential moving average of the loss (with bias correction)
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of the best one


def lr_range_test(task: TrainingTask, cfg: RunConfig, plot: str | Path) -> dict[str, Any]:
    """Run the sweep; writes a loss-vs-LR plot to ``plot`` and returns the LRs, smoothed losses and
    ``suggested_lr`` (for ``train.lr``; a stage-2 backbone group keeps its ratio to it)."""
    lf = cfg.lr_finder
    if not 0 < lf.min_lr < lf.max_lr or lf.steps < 10:
        raise VestisError("lr_finder needs 0 < min_lr < max_lr and at least 10 steps")
    device = resolve_device(cfg.train.device)
    saved = copy.deepcopy({"model": task.model.state_dict(), "criterion": task.criterion.state_dict()})
    task.model.to(device).train()
    task.criterion.to(device).train()
    loader = train_loader(task, cfg)
    optimizer = make_optimizer(task, cfg.train)
    ratios = [g["lr"] / cfg.train.lr for g in optimizer.param_groups]
    factor = (lf.max_lr / lf.min_lr) ** (1 / (lf.steps - 1))
    lrs, losses = [], []
    avg, best, epoch = 0.0, math.inf, 0
    try:
        batches = iter(())
        for step in range(lf.steps):
            lr = lf.min_lr * factor**step
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            try:
                inputs, labels = next(batches)
            except StopIteration:
                seed_epoch(loader, cfg.train.seed, epoch)
                batches, epoch = iter(loader), epoch + 1
                inputs, labels = next(batches)
            loss = task.loss(inputs.to(device), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                break
            avg = SMOOTHING * avg + (1 - SMOOTHING) * value
            smoothed = avg / (1 - SMOOTHING ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed > DIVERGED * best:
                break
    finally:
        task.model.load_state_dict(saved["model"])
        task.criterion.load_state_dict(saved["criterion"])
    if len(lrs) < 5:
        raise VestisError(f"the loss diverged after {len(lrs)} steps of the LR range test: lower lr_finder.min_lr")
    suggested = suggest_lr(np.array(lrs), np.array(losses))
    plot_lr_curve(lrs, losses, suggested, Path(plot), title=cfg.name)
    return {"suggested_lr": suggested, "lrs": lrs, "losses": losses, "plot": str(plot)}


def suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR at the steepest descent of the loss against log10(LR), ignoring the first and last
    tenth of the sweep (warm-up noise and divergence)."""
    slope = np.gradient(losses, np.log10(lrs))
    lo, hi = len(lrs) // 10, len(lrs) - max(1, len(lrs) // 10)
    return float(lrs[lo + int(np.argmin(slope[lo:hi]))])


def plot_lr_curve(lrs: list[float], losses: list[float], suggested: float, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggested, color="tab:red", linestyle="--", label=f"suggested lr {suggested:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss", title=f"LR range test: {title}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""LR range test: finite suggestion inside the sweep, a PNG plot, and the model left untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vestis.train.command import prepare, train_from_config
from vestis.train.config import load_config
from vestis.train.lr_finder import lr_range_test, suggest_lr


def test_lr_finder_suggests_a_finite_lr_and_plots(garment_config):
    cfg = load_config(garment_config, ["lr_finder.steps=25", "lr_finder.min_lr=1e-5", "lr_finder.max_lr=10"])
    task = prepare(cfg)
    before = {k: v.clone() for k, v in task.head.state_dict().items()}
    result = lr_range_test(task, cfg, cfg.run_dir / "lr.png")
    assert math.isfinite(result["suggested_lr"]) and 1e-5 <= result["suggested_lr"] <= 10
    assert all(math.isfinite(x) for x in result["losses"]) and len(result["lrs"]) >= 5
    assert np.all(np.diff(result["lrs"]) > 0)
    assert (cfg.run_dir / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for key, value in task.head.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_find_lr_command_writes_plot_without_training(garment_config):
    out = train_from_config(garment_config, ["lr_finder.steps=20"], find_lr=True)
    assert out["plot"].endswith("lr_finder.png") and math.isfinite(out["suggested_lr"])
    run_dir = load_config(garment_config).run_dir
    assert (run_dir / "lr_finder.png").exists() and not (run_dir / "best.pt").exists()


def test_suggestion_is_at_steepest_descent():
    lrs = np.logspace(-5, 0, 50)
    losses = 2 - np.tanh(3 * (np.log10(lrs) + 2.5))  # falls fastest at 10^-2.5
    assert suggest_lr(lrs, losses) == pytest.approx(10**-2.5, rel=0.3)

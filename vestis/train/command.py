"""What ``vestis train --config FILE [--set key=value ...] [--find-lr]`` runs.

A run writes into ``runs/<name>/`` (or ``output``): the resolved ``config.yaml``, ``split.csv``
(unless ``data.split_file`` names another), ``last.pt`` / ``best.pt`` checkpoints, ``curves.png``,
``metrics.json`` (validation history, test metrics of the best model and, for stage 1, of the
untrained backbone features) and ``model.onnx`` + ``model.json`` (the exported encoder).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vestis.errors import VestisError
from vestis.eval.protocols import knn_accuracy
from vestis.train.config import RunConfig, load_config
from vestis.train.features import Items, load_items, resolve_split
from vestis.train.heads import EmbeddingHead, HeadLoss
from vestis.train.trainer import (
    ArrayDataset,
    Trainer,
    TrainingTask,
    class_labels,
    embed_rows,
    loader_workers,
    resolve_device,
    retrieval_scores,
)

log = logging.getLogger(__name__)


def train_from_config(config_path: str | Path, overrides: list[str] | None = None, *,
                      find_lr: bool = False) -> dict[str, Any]:
    """Load the config, apply ``key=value`` overrides, then train (or, with ``find_lr``, only run
    the LR range test). A config with a ``text`` section trains a joint text-image space
    (:mod:`vestis.train.joint`). Returns the run summary (also written to ``metrics.json``)."""
    from vestis.train.joint import is_joint_config, train_joint_from_config

    if is_joint_config(config_path):
        return train_joint_from_config(config_path, overrides, find_lr=find_lr)
    return run(load_config(config_path, overrides), find_lr=find_lr)


def feature_task(cfg: RunConfig, items: Items, split: np.ndarray) -> TrainingTask:
    """The stage-1 task: the head alone on the items' stored backbone features."""
    if items.vectors is None:
        raise VestisError("stage 1 needs the items' features")
    groups = items.groups(cfg.data.labels)
    classes, labels = class_labels(groups, split, cfg.train.train_splits)
    head = EmbeddingHead(items.vectors.shape[1], cfg.head.dim)
    criterion = HeadLoss(cfg.head, len(classes))
    vectors = items.vectors

    def inputs(rows: np.ndarray, augment: bool) -> ArrayDataset:
        return ArrayDataset(vectors[rows])

    params = [{"params": [*head.parameters(), *criterion.parameters()], "lr": cfg.train.lr}]
    return TrainingTask(1, head, head, criterion, params, inputs, items, groups, split, classes, labels,
                        items.encoder_name)


def prepare(cfg: RunConfig) -> TrainingTask:
    """Read the items, make or read the split, and build the stage's task (seeded)."""
    run_dir = cfg.run_dir
    items = load_items(cfg.data, run_dir.parent, features=cfg.stage == 1)
    split, _ = resolve_split(items, cfg.data, run_dir)
    torch.manual_seed(cfg.train.seed)
    if cfg.stage == 1:
        return feature_task(cfg, items, split)
    from vestis.train.finetune import finetune_task

    return finetune_task(cfg, items, split)


def run(cfg: RunConfig, *, find_lr: bool = False) -> dict[str, Any]:
    """Train (or LR-test) the configured run; see the module docstring for what it writes."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    task = prepare(cfg)
    if find_lr:
        from vestis.train.lr_finder import lr_range_test

        result = lr_range_test(task, cfg, run_dir / "lr_finder.png")
        (run_dir / "lr_finder.json").write_text(json.dumps(result, indent=2))
        return {"run_dir": str(run_dir), "suggested_lr": result["suggested_lr"], "plot": result["plot"]}
    summary: dict[str, Any] = {"name": cfg.name, "run_dir": str(run_dir), "stage": cfg.stage, "head": cfg.head.kind,
                               "labels": cfg.data.labels, "classes": len(task.classes),
                               "split_sizes": {s: int((task.split == s).sum()) for s in ("train", "val", "test")}}
    summary.update(Trainer(cfg, task, run_dir).fit())
    start = time.perf_counter()
    summary["test"] = evaluate(task, cfg)
    if cfg.stage == 1:
        summary["test_baseline"] = evaluate(task, cfg, task.items.vectors)
    summary["test_seconds"] = time.perf_counter() - start
    if cfg.export.onnx:
        from vestis.train.export import export_checkpoint

        try:
            summary["onnx"] = str(export_checkpoint(run_dir / "best.pt", run_dir / "model.onnx",
                                                    version=cfg.export.version))
        except VestisError as e:  # the trained model and its metrics are still worth keeping
            log.warning("not exported to ONNX: %s", e)
            summary["onnx_error"] = str(e)
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate(task: TrainingTask, cfg: RunConfig, vectors: np.ndarray | None = None) -> dict[str, Any]:
    """Test metrics: labelled test items query ``eval.gallery``; embeddings of the trained model
    unless ``vectors`` (all items, e.g. the backbone features) are given."""
    train_splits = cfg.train.train_splits
    gallery = {"outside-train": np.flatnonzero(~np.isin(task.split.astype(str), train_splits)),
               "train": task.rows(*train_splits), "all": np.arange(len(task.split))}[cfg.eval.gallery]
    queries = task.rows("test")
    queries = queries[np.array([g is not None for g in task.groups[queries]], bool)]
    if len(queries) == 0:
        raise VestisError("the test split has no labelled item to evaluate")
    rows = np.union1d(queries, gallery)
    if vectors is None:
        vectors = np.zeros((len(task.split), task.head.dim), np.float32)
        vectors[rows] = embed_rows(task, rows, resolve_device(cfg.train.device), workers=loader_workers(task, cfg))
    out = dict(retrieval_scores(vectors, task.groups, queries, gallery, tuple(cfg.eval.ks)))
    if cfg.eval.knn_k:
        knn = knn_accuracy(vectors[queries], task.groups[queries].astype(str), vectors[gallery],
                           np.array([str(g) for g in task.groups[gallery]]), k=cfg.eval.knn_k)
        out.update({"kNN_accuracy": knn["kNN_accuracy"], "kNN_k": knn["kNN_k"]})
    return out

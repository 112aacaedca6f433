"""What ``vestis train --config FILE [--set key=value ...] [--find-lr]`` runs.

A run writes into ``runs/<name>/`` (or ``output``): the resolved ``config.yaml``, ``split.csv``
(unless ``data.split_file`` names another), ``last.pt`` / ``best.pt`` checkpoints, ``curves.png``,
``metrics.json`` (validation history, test metrics of the best model and, for stage 1, of the
untrained backbone features) and ``model.onnx`` + ``model.json`` (the exported encoder).

:func:`train_from_config` dispatches on the config's ``kind``: ``embedding``, ``finetune`` and
``attributes`` run through :func:`run`, where a :class:`ModelKind` builds the training task and the
test figures (:class:`HeadModel` here, :class:`vestis.train.attributes.run.AttributeModel`) and
loading, the trainer, the export and the report are shared; ``joint`` trains a text-image space
(:func:`vestis.train.joint.train_joint`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from vestis.errors import VestisError
from vestis.eval.metrics import change_interval
from vestis.eval.protocols import knn_accuracy, per_query_ap, score_ranking
from vestis.train.batches import ArrayDataset, loader_workers
from vestis.train.config import RunConfig, load_config
from vestis.train.features import Items, load_items, resolve_split
from vestis.train.heads import EmbeddingHead, HeadLoss, IdentityAnchor, SimilarityDistillation
from vestis.train.report import write_run_report
from vestis.train.task import TrainingTask, class_labels
from vestis.train.trainer import Trainer, embed_rows, resolve_device, retrieval_ranking
from vestis.train.transfer import JUDGED_BY, JUDGED_K, TransferSet, load_transfer_sets, measure_transfer

log = logging.getLogger(__name__)


def train_from_config(config_path: str | Path, overrides: list[str] | None = None, *,
                      find_lr: bool = False) -> dict[str, Any]:
    """Load the config, apply ``key=value`` overrides, then train the run of its ``kind`` (or, with
    ``find_lr``, only run the LR range test). Returns the run summary (also written to ``metrics.json``)."""
    cfg = load_config(config_path, overrides)
    if cfg.kind == "joint":
        from vestis.train.joint import train_joint

        if find_lr:
            raise VestisError("--find-lr is not available for joint text-image runs (kind: joint)")
        return train_joint(cfg)
    return run(cfg, find_lr=find_lr)


def feature_task(cfg: RunConfig, items: Items, split: np.ndarray) -> TrainingTask:
    """The stage-1 task: the head alone on the items' stored backbone features."""
    if items.vectors is None:
        raise VestisError("stage 1 needs the items' features")
    groups = items.groups(cfg.data.labels)
    classes, labels = class_labels(groups, split, cfg.train.train_splits)
    head = EmbeddingHead.from_config(items.vectors.shape[1], cfg.head)
    if head.needs_centre:
        head.set_centre(torch.from_numpy(items.vectors[np.isin(split.astype(str), cfg.train.train_splits)]))
    criterion = HeadLoss(cfg.head, len(classes), head.dim)
    if cfg.head.class_init == "means":
        rows = np.flatnonzero(np.isin(split.astype(str), cfg.train.train_splits) & (labels >= 0))
        with torch.no_grad():
            embeddings = head.eval()(torch.from_numpy(np.ascontiguousarray(items.vectors[rows], np.float32)))
        criterion.init_class_weights(embeddings, torch.from_numpy(labels[rows]))
    vectors = items.vectors

    def inputs(rows: np.ndarray, augment: bool) -> ArrayDataset:
        return ArrayDataset(vectors[rows])

    params = [{"params": [*head.parameters(), *criterion.parameters()], "lr": cfg.train.lr}]
    return TrainingTask(1, head, head, criterion, params, inputs, items, groups, split, classes, labels,
                        items.encoder_name, regulariser=regulariser(cfg, head))


def regulariser(cfg: RunConfig, head: EmbeddingHead) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The sum of the configured terms that keep the head near its backbone (None: none)."""
    terms = [*([SimilarityDistillation(cfg.head.distill)] if cfg.head.distill else []),
             *([IdentityAnchor(head, cfg.head.anchor)] if cfg.head.anchor else [])]
    if not terms:
        return None
    return lambda features, embeddings: sum(term(features, embeddings) for term in terms)


def prepare(cfg: RunConfig) -> TrainingTask:
    """Read the items, make or read the split, and build the stage's task (seeded)."""
    run_dir = cfg.run_dir
    # stage 2 reads a collection's stored vectors too, the untrained backbone's baseline in domain
    items = load_items(cfg.data, run_dir.parent, features=cfg.stage == 1 or cfg.data.collection is not None)
    split, _ = resolve_split(items, cfg.data, run_dir)
    torch.manual_seed(cfg.train.seed)
    if cfg.stage == 1:
        return feature_task(cfg, items, split)
    from vestis.train.finetune import finetune_task

    return finetune_task(cfg, items, split)


class ModelKind(Protocol):
    """What one kind of model brings to a run: its task, its summary fields and its test figures."""

    def prepare(self, cfg: RunConfig) -> TrainingTask:
        """Read the data, make or read the split and build the task (seeded)."""

    def describe(self, cfg: RunConfig, task: TrainingTask) -> dict[str, Any]:
        """What the run trains on (written at the top of ``metrics.json``)."""

    def evaluate(self, cfg: RunConfig, task: TrainingTask) -> dict[str, Any]:
        """Test figures of the trained model (and its baseline), as top-level summary keys."""

    def prepare_transfer(self, cfg: RunConfig, sets: list[TransferSet]) -> list[TransferSet]:
        """What the transfer sets need besides their stored vectors, read before training (a set
        that cannot be measured fails here); the sets to measure."""

    def embed_transfer(self, cfg: RunConfig, task: TrainingTask, tset: TransferSet) -> np.ndarray:
        """The trained model's retrieval vectors of a transfer set's items."""

    def export(self, checkpoint: Path, path: Path, version: str) -> Path:
        """Export the best checkpoint to ONNX (with its sidecar JSON); returns the model path."""


class HeadModel:
    """An embedding head on backbone features (stage 1) or with the backbone (stage 2)."""

    def export(self, checkpoint: Path, path: Path, version: str) -> Path:
        from vestis.train.export import export_checkpoint

        return export_checkpoint(checkpoint, path, version=version)

    def prepare(self, cfg: RunConfig) -> TrainingTask:
        return prepare(cfg)

    def describe(self, cfg: RunConfig, task: TrainingTask) -> dict[str, Any]:
        return {"stage": cfg.stage, "head": cfg.head.kind, "labels": cfg.data.labels, "classes": len(task.classes),
                "split_sizes": {s: int((task.split == s).sum()) for s in ("train", "val", "test")}}

    def evaluate(self, cfg: RunConfig, task: TrainingTask) -> dict[str, Any]:
        if cfg.stage == 2:  # the model embeds the images
            test, test_ap = evaluate(task, cfg)
        else:
            device = resolve_device(cfg.train.device)
            test, test_ap = evaluate(task, cfg, embed_features(task.head, task.items.vectors, device))
        if task.items.vectors is None:  # a stage-2 catalogue: no stored backbone vectors to compare with
            return {"test": test}
        baseline, baseline_ap = evaluate(task, cfg, task.items.vectors)
        return {"test": test, "test_baseline": baseline,
                f"test_{JUDGED_BY}_change_ci95": list(change_interval(test_ap, baseline_ap))}

    def prepare_transfer(self, cfg: RunConfig, sets: list[TransferSet]) -> list[TransferSet]:
        return sets  # stage 1 reads the stored vectors, stage 2 the images after training

    def embed_transfer(self, cfg: RunConfig, task: TrainingTask, tset: TransferSet) -> np.ndarray:
        device = resolve_device(cfg.train.device)
        if cfg.stage == 1:
            return embed_features(task.head, tset.items.vectors, device)
        from vestis.encoders import BUILTIN_PREPROCESSING
        from vestis.train.finetune import ImageDataset

        images = ImageDataset(tset.items.sources, BUILTIN_PREPROCESSING[task.backbone])
        task.model.eval()
        with torch.no_grad():
            out = [task.head.embed(task.model.backbone(x.to(device))[0]).cpu()
                   for x in DataLoader(images, batch_size=64, num_workers=cfg.finetune.workers)]
        return torch.cat(out).numpy()


@torch.no_grad()
def embed_features(head: EmbeddingHead, vectors: np.ndarray, device: torch.device,
                   batch_size: int = 4096) -> np.ndarray:
    """The retrieval embedding (:meth:`EmbeddingHead.embed`) of backbone feature rows."""
    head.eval()
    out = [head.embed(torch.from_numpy(np.ascontiguousarray(vectors[i:i + batch_size], np.float32)).to(device)).cpu()
           for i in range(0, len(vectors), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, head.out_dim), np.float32)


def model_kind(cfg: RunConfig) -> ModelKind:
    """What a run of ``cfg.kind`` trains: the attribute model, or an image head (either stage)."""
    if cfg.kind == "attributes":
        from vestis.train.attributes.run import AttributeModel

        return AttributeModel()
    return HeadModel()


def run(cfg: RunConfig, *, find_lr: bool = False) -> dict[str, Any]:
    """Train (or LR-test) the configured run; see the module docstring for what it writes."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    kind = model_kind(cfg)
    task = kind.prepare(cfg)
    transfer_sets, skipped = load_transfer_sets(cfg.transfer, task.items.encoder_version,  # bad sets fail before training
                                                task.items)
    if find_lr:
        from vestis.train.lr_finder import lr_range_test

        result = lr_range_test(task, cfg, run_dir / "lr_finder.png")
        (run_dir / "lr_finder.json").write_text(json.dumps(result, indent=2))
        return {"run_dir": str(run_dir), "suggested_lr": result["suggested_lr"], "plot": result["plot"]}
    transfer_sets = kind.prepare_transfer(cfg, transfer_sets)
    summary: dict[str, Any] = {"name": cfg.name, "run_dir": str(run_dir), **kind.describe(cfg, task)}
    summary.update(Trainer(cfg, task, run_dir).fit())
    start = time.perf_counter()
    summary.update(kind.evaluate(cfg, task))
    if cfg.eval.labels:
        summary["eval_labels"] = cfg.eval.labels
    summary["test_seconds"] = time.perf_counter() - start
    if cfg.transfer:
        summary.update(measure_transfer(transfer_sets, skipped, lambda tset: kind.embed_transfer(cfg, task, tset)))
    if cfg.export.onnx:
        try:
            summary["onnx"] = str(kind.export(run_dir / "best.pt", run_dir / "model.onnx", cfg.export.version))
        except VestisError as e:  # the trained model and its metrics are still worth keeping
            log.warning("not exported to ONNX: %s", e)
            summary["onnx_error"] = str(e)
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    summary["report"] = str(write_run_report(run_dir, summary))
    return summary


def evaluate(task: TrainingTask, cfg: RunConfig,
             vectors: np.ndarray | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Test metrics: labelled test items query ``eval.gallery``; embeddings of the trained model
    unless ``vectors`` (all items, e.g. the backbone features) are given. Relevant: the same
    ``eval.labels`` group (default: the training labels). Also each scored query's AP@10, for the
    interval of a change over the test queries."""
    train_splits = cfg.train.train_splits
    groups = task.items.groups(cfg.eval.labels) if cfg.eval.labels else task.groups
    gallery = {"outside-train": np.flatnonzero(~np.isin(task.split.astype(str), train_splits)),
               "train": task.rows(*train_splits), "all": np.arange(len(task.split))}[cfg.eval.gallery]
    queries = task.rows("test")
    queries = queries[np.array([g is not None for g in groups[queries]], bool)]
    if len(queries) == 0:
        raise VestisError("the test split has no labelled item to evaluate")
    rows = np.union1d(queries, gallery)
    if vectors is None:
        vectors = np.zeros((len(task.split), task.head.dim), np.float32)
        vectors[rows] = embed_rows(task, rows, resolve_device(cfg.train.device), workers=loader_workers(task, cfg))
    ranking, exclude = retrieval_ranking(vectors, queries, gallery, max(*cfg.eval.ks, JUDGED_K))
    out = dict(score_ranking(ranking, groups[queries], groups[gallery], tuple(cfg.eval.ks),
                             exclude_self=exclude))
    if cfg.eval.knn_k:
        knn = knn_accuracy(vectors[queries], groups[queries].astype(str), vectors[gallery],
                           np.array([str(g) for g in groups[gallery]]), k=cfg.eval.knn_k)
        out.update({"kNN_accuracy": knn["kNN_accuracy"], "kNN_k": knn["kNN_k"]})
    return out, per_query_ap(ranking, groups[queries], groups[gallery], JUDGED_K, exclude_self=exclude)

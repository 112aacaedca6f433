"""The attribute model as a kind of run of :func:`vestis.train.command.run`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vestis.encoders.attribute_encoder import MODEL_KIND
from vestis.encoders.onnx_encoder import FEATURE_MAPS
from vestis.train.attributes.evaluation import embed_items, evaluate_attribute_map
from vestis.train.attributes.export import export_attribute_model
from vestis.train.attributes.features import (
    AttributeData,
    RowView,
    feature_views,
    item_features,
    load_attribute_data,
)
from vestis.train.attributes.task import attribute_task
from vestis.train.config import AttributeRunConfig, DataConfig
from vestis.train.features import resolve_split
from vestis.train.task import TrainingTask
from vestis.train.transfer import TransferSet


class AttributeModel:
    """The attribute model as a kind of run for :func:`vestis.train.command.run`: the shared
    trainer validates each attribute's pairs against the same attribute's (the task's partition);
    the test figure is the attribute MAP of the model and of the backbone's global embedding."""

    def __init__(self) -> None:
        self.data: AttributeData | None = None
        self.item_split = np.zeros(0, dtype=object)
        self.transfer_features: dict[str, tuple[RowView, RowView]] = {}

    def prepare(self, cfg: AttributeRunConfig) -> TrainingTask:
        self.data = load_attribute_data(cfg, progress=cfg.train.progress)
        self.item_split, _ = resolve_split(self.data.items, cfg.data, cfg.run_dir)
        torch.manual_seed(cfg.train.seed)
        return attribute_task(cfg, self.data, self.item_split)

    def describe(self, cfg: AttributeRunConfig, task: TrainingTask) -> dict[str, Any]:
        return {
            "kind": MODEL_KIND,
            "attributes": self.data.attributes,
            "pairs": len(self.data.pair_item),
            "classes": len(task.classes),
            "split_sizes": {s: int((self.item_split == s).sum()) for s in ("train", "val", "test")},
        }

    def evaluate(self, cfg: AttributeRunConfig, task: TrainingTask) -> dict[str, Any]:
        return {"test": evaluate_attribute_map(self.data, self.item_split, task.head, cfg.model.global_branch)}

    def prepare_transfer(self, cfg: AttributeRunConfig, sets: list[TransferSet]) -> list[TransferSet]:
        """The sets, each with the attribute whose space scores it, and their feature maps, cached in
        each collection's ``features/`` folder (computed on first use, before training); items whose
        image can no longer be read are left out of the set."""
        map_name = FEATURE_MAPS[cfg.model.feature_map]
        out = []
        for tset in sets:
            collection = tset.config.collection
            items, cache = item_features(DataConfig(collection=collection), Path(collection).parent, map_name,
                                         progress=cfg.train.progress)
            if len(items) < len(tset.items):
                tset = tset.subset([i for i, item_id in enumerate(tset.items.ids) if item_id in cache.row])
            self.transfer_features[tset.title] = feature_views(cache, tset.items.ids, map_name)
            out.append(dataclasses.replace(tset, space=tset.config.space))
        return out

    def embed_transfer(self, cfg: AttributeRunConfig, task: TrainingTask, tset: TransferSet) -> np.ndarray:
        """The set's items in the space of its attribute (``space``)."""
        maps, global_vecs = self.transfer_features[tset.title]
        attribute = self.data.attributes.index(tset.space)
        rows = np.arange(len(tset.items))
        return embed_items(task.head, maps, global_vecs if cfg.model.global_branch else None, rows)[:, attribute]

    def export(self, checkpoint: Path, path: Path, version: str) -> Path:
        return export_attribute_model(checkpoint, path, version=version)

"""A joint text-image space learned from the catalogue's own titles and labels (LiT style).

Both towers stay frozen: the image side is the collection's stored backbone vectors, the text
side the sentence vectors of a text encoder (all-MiniLM-L6-v2). Two small projection heads map
them into one ``head.dim``-d space (or, with ``head.residual``, the image side is the residual
head of the image models, the centred backbone vector plus an anchored learned correction of
rank ``head.dim``, so the space keeps the backbone's size and its image-to-image neighbours, and
the text side maps into it), trained with CLIP's symmetric contrastive loss and a learned
temperature on (image, text) pairs of the training split. An item's texts are its title column
(``text.column``, e.g. ``productDisplayName``) and/or captions made from its labels by
``text.templates`` (e.g. ``"{gender} {baseColour} {articleType}"``); with several texts per item
every one is a pair. With ``text.synonym_rate`` a training pair's text is, in that share of
batches, its variant in the shipped vocabulary's synonyms ("Men Blue T-shirt" -> "guys blue
tee"), so the text head learns shoppers' words as well. Items of one caption, and texts of one item, are each other's positives
(label captions repeat across items), so the softmax targets spread over them.

Runs through the shared :class:`vestis.train.trainer.Trainer` (AdamW, schedule, early stopping on
validation text-to-image mAP@10, checkpoints, curves) and writes ``image_head.onnx``,
``text_head.onnx`` and ``joint.json`` (see :mod:`vestis.encoders.joint`) into the run folder.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from vestis.data.captions import item_texts, substitute_synonyms, synonym_choices
from vestis.data.vocabulary import shipped_entries
from vestis.encoders.joint import IMAGE_INPUT, MODEL_KIND, SIDECAR, TEXT_INPUT
from vestis.encoders.onnx_encoder import EMBEDDING
from vestis.encoders.text import embed_texts
from vestis.errors import VestisError
from vestis.eval.protocols import rank, score_ranking
from vestis.train.config import JointRunConfig, config_from_dict
from vestis.train.export import export_module
from vestis.train.features import Items, load_items, resolve_split
from vestis.train.heads import EmbeddingHead, IdentityAnchor
from vestis.train.batches import PairIndices
from vestis.train.task import TrainingTask
from vestis.train.trainer import VAL_METRIC, Trainer, load_checkpoint
from vestis.train.transfer import load_transfer_sets, measure_transfer

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- model
class Projection(nn.Module):
    """One tower's head: Linear, or Linear -> GELU -> Linear; un-normalised output."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 0):
        super().__init__()
        self.in_dim, self.dim = in_dim, dim
        self.net = (nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim)) if hidden
                    else nn.Linear(in_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def joint_heads(cfg: JointRunConfig, image_dim: int, text_dim: int) -> tuple[nn.Module, Projection]:
    """The two towers' heads. The image side is a :class:`Projection` to ``head.dim``, or with
    ``head.residual`` the residual :class:`EmbeddingHead` (output the backbone's size, ``head.dim``
    the rank of its correction; its centre is set from the training items); the text side maps
    into the image side's space."""
    image = (EmbeddingHead(image_dim, cfg.head.dim, residual=True) if cfg.head.residual
             else Projection(image_dim, cfg.head.dim, cfg.text.hidden))
    return image, Projection(text_dim, image.dim, cfg.text.hidden)


class Normalised(nn.Module):
    """A head with an L2-normalised output: what is exported."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(x), dim=1)


class JointPairs(nn.Module):
    """The trainer's model: pair indices -> [image side | text side] (N x 2 dim, un-normalised)."""

    def __init__(self, image: nn.Module, text: Projection, image_vecs: np.ndarray, text_vecs: np.ndarray,
                 pair_item: np.ndarray, pair_text: np.ndarray, variant_vecs: np.ndarray | None = None,
                 synonym_rate: float = 0.0, seed: int = 0):
        super().__init__()
        self.image, self.text = image, text
        self.in_dim, self.dim = image.in_dim, 2 * image.dim
        self.image_vecs, self.text_vecs = torch.from_numpy(image_vecs), torch.from_numpy(text_vecs)
        self.pair_item, self.pair_text = torch.from_numpy(pair_item), torch.from_numpy(pair_text)
        self.variant_vecs = None if variant_vecs is None or not synonym_rate else torch.from_numpy(variant_vecs)
        self.synonym_rate, self.draws = synonym_rate, torch.Generator().manual_seed(seed)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        pairs = pairs.cpu()
        device = next(self.parameters()).device
        img = self.image_vecs[self.pair_item[pairs]].to(device)
        rows = self.pair_text[pairs]
        txt = self.text_vecs[rows]
        if self.training and self.variant_vecs is not None:  # this batch's draw of synonym variants
            swap = torch.rand(len(rows), generator=self.draws) < self.synonym_rate
            txt = torch.where(swap[:, None], self.variant_vecs[rows], txt)
        txt = txt.to(device)
        return torch.cat([self.image(img), self.text(txt)], dim=1)


class ClipLoss(nn.Module):
    """CLIP's symmetric contrastive loss with a learned temperature, over the pairs of a batch.

    ``labels`` are pair indices; pairs that share their item or their text are positives of each
    other, and the cross-entropy targets are spread evenly over a row's positives."""

    needs_m_per_class = False

    def __init__(self, pair_item: np.ndarray, pair_text: np.ndarray, temperature: float = 0.07):
        super().__init__()
        self.pair_item, self.pair_text = torch.from_numpy(pair_item), torch.from_numpy(pair_text)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        dim = embeddings.shape[1] // 2
        img, txt = F.normalize(embeddings[:, :dim], dim=1), F.normalize(embeddings[:, dim:], dim=1)
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T
        index = labels.cpu()
        item, text = self.pair_item[index], self.pair_text[index]
        positive = ((item[:, None] == item[None, :]) | (text[:, None] == text[None, :])).to(logits.device)
        target = positive.float() / positive.sum(1, keepdim=True)
        loss = (torch.sum(-target * logits.log_softmax(1)) + torch.sum(-target * logits.T.log_softmax(1))) / (
            2 * len(logits))
        return loss, {"clip": float(loss.detach())}


# ----------------------------------------------------------------------------------------- data
@dataclass
class JointData:
    items: Items
    texts: list[str]  # unique texts
    text_vecs: np.ndarray  # len(texts) x text dim (the frozen text tower's sentence vectors)
    pair_item: np.ndarray  # pair -> item row
    pair_text: np.ndarray  # pair -> text row
    text_encoder_version: str
    variant_vecs: np.ndarray | None = None  # per text row: its synonym variant's vector (text.synonym_rate)


def load_joint_data(cfg: JointRunConfig) -> JointData:
    """The collection's items and vectors, their texts and the (item, text) pairs."""
    items = load_items(cfg.data, cfg.run_dir.parent)
    index: dict[str, int] = {}
    pair_item, pair_text = [], []
    for row, meta in enumerate(items.metadata):
        for text in item_texts(meta, cfg.text.column, cfg.text.templates):
            pair_item.append(row)
            pair_text.append(index.setdefault(text, len(index)))
    if not pair_item:
        raise VestisError(f"no item of {cfg.data.collection or cfg.data.source} has a text: no {cfg.text.column!r} column and no "
                          "template whose fields it has")
    texts = list(index)
    vectors, version = embed_texts(texts, cfg.text.encoder, items.cache_dir, progress=cfg.train.progress)
    variant_vecs = None
    if cfg.text.synonym_rate:
        variants = synonym_variants(texts, cfg.train.seed)
        variant_vecs = embed_texts(variants, cfg.text.encoder, items.cache_dir, progress=cfg.train.progress)[0]
    return JointData(items, texts, vectors, np.array(pair_item, np.int64), np.array(pair_text, np.int64), version,
                     variant_vecs)


def synonym_variants(texts: list[str], seed: int) -> list[str]:
    """One variant of each text with every phrase the shipped vocabulary knows replaced by a
    synonym (seeded; the text itself when it has none)."""
    choices, rng = synonym_choices(shipped_entries()), random.Random(seed)
    return [substitute_synonyms(text, choices, rng) for text in texts]


def joint_task(cfg: JointRunConfig, data: JointData, item_split: np.ndarray) -> TrainingTask:
    """The trainer's task over (item, text) pairs; a pair's "class" is the pair itself (the loss
    finds the positives), and its split is its item's."""
    image, text = joint_heads(cfg, data.items.vectors.shape[1], data.text_vecs.shape[1])
    if cfg.head.residual:
        image.set_centre(torch.from_numpy(data.items.vectors[np.isin(item_split.astype(str), cfg.train.train_splits)]))
    model = JointPairs(image, text, data.items.vectors, data.text_vecs, data.pair_item, data.pair_text,
                       data.variant_vecs, cfg.text.synonym_rate, cfg.train.seed)
    criterion = ClipLoss(data.pair_item, data.pair_text, cfg.text.temperature)
    split = item_split[data.pair_item]
    train = np.isin(split.astype(str), cfg.train.train_splits)
    labels = np.where(train, np.arange(len(split)), -1)
    groups = np.array([data.texts[t] for t in data.pair_text], dtype=object)
    params = [{"params": [*model.parameters(), *criterion.parameters()], "lr": cfg.train.lr}]
    return TrainingTask(1, model, model, criterion, params, lambda rows, augment: PairIndices(rows), data.items,
                        groups, split, [str(i) for i in np.flatnonzero(train)], labels, data.items.encoder_name,
                        regulariser=IdentityAnchor(image, cfg.head.anchor) if cfg.head.anchor else None)


@torch.no_grad()
def project(head: nn.Module, vectors: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """A head's L2-normalised output for many vectors, in eval mode."""
    head.eval()
    device = next(head.parameters()).device
    out = [F.normalize(head(torch.from_numpy(vectors[i:i + batch_size]).to(device)), dim=1).cpu()
           for i in range(0, len(vectors), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, head.dim), np.float32)


def text_to_image_scores(data: JointData, image: nn.Module, text: nn.Module, rows: np.ndarray,
                         ks: tuple[int, ...] = (1, 10)) -> dict[str, float | int]:
    """Each distinct first text of the items at ``rows`` queries their images; relevant = the
    items whose first text it is."""
    first: dict[int, int] = {}
    for p, item in enumerate(data.pair_item.tolist()):
        first.setdefault(item, int(data.pair_text[p]))
    rows = np.array([r for r in rows.tolist() if r in first], np.int64)
    if len(rows) == 0:
        return {}
    gallery_text = np.array([first[r] for r in rows.tolist()])
    queries = np.unique(gallery_text)
    q = project(text, data.text_vecs[queries])
    g = project(image, data.items.vectors[rows])
    ranking = rank(q, g, min(max(ks), len(rows)))[1]
    return score_ranking(ranking, queries, gallery_text, ks)


class JointTrainer(Trainer):
    """The shared trainer with text-to-image validation (mAP@10 over the validation items)."""

    def __init__(self, cfg: JointRunConfig, task: TrainingTask, run_dir: Path, data: JointData):
        super().__init__(cfg, task, run_dir)
        self.data = data

    def validate(self) -> dict[str, float]:
        model: JointPairs = self.task.model
        val_items = np.unique(self.data.pair_item[self.val_rows])
        metrics = text_to_image_scores(self.data, model.image, model.text, val_items, ks=(10,))
        order = np.random.default_rng(self.cfg.train.seed).permutation(self.val_rows)
        size = self.loader.batch_size or self.cfg.train.batch_size
        losses, counts = [], []
        model.eval()
        self.task.criterion.eval()
        with torch.no_grad():
            for chunk in np.array_split(order, max(1, math.ceil(len(order) / size))):
                if len(chunk) >= 2:
                    index = torch.from_numpy(chunk)
                    losses.append(float(self.task.criterion(model(index), index.to(self.device))[0]))
                    counts.append(len(chunk))
        return {VAL_METRIC: float(metrics.get(VAL_METRIC, 0.0)),
                "val_loss": float(np.average(losses, weights=counts)) if losses else float("nan")}

    def state(self) -> dict[str, Any]:
        state = super().state()
        state["joint"] = {"image_dim": self.task.model.image.in_dim, "text_dim": self.task.model.text.in_dim,
                          "text_encoder_version": self.data.text_encoder_version}
        return state


def train_joint(cfg: JointRunConfig) -> dict[str, Any]:
    """Train the two heads; writes config.yaml, split.csv, last.pt/best.pt, curves.png,
    metrics.json and the exported heads with ``joint.json``."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    start = time.perf_counter()
    data = load_joint_data(cfg)
    transfer_sets, skipped = load_transfer_sets(cfg.transfer, data.items.encoder_version, data.items)  # bad sets fail before training
    item_split, _ = resolve_split(data.items, cfg.data, run_dir)
    torch.manual_seed(cfg.train.seed)
    task = joint_task(cfg, data, item_split)
    summary: dict[str, Any] = {
        "name": cfg.name, "run_dir": str(run_dir), "kind": MODEL_KIND, "pairs": len(data.pair_item),
        "texts": len(data.texts), "train_pairs": int((task.labels >= 0).sum()),
        "split_sizes": {s: int((item_split == s).sum()) for s in ("train", "val", "test")},
        "prepare_seconds": time.perf_counter() - start,
    }
    summary.update(JointTrainer(cfg, task, run_dir, data).fit())
    test = np.flatnonzero(item_split.astype(str) == "test")
    summary["test_text_to_image"] = text_to_image_scores(data, task.model.image, task.model.text, test)
    if cfg.transfer:  # the joint space's image side against the backbone, as for the image heads
        summary.update(measure_transfer(transfer_sets, skipped, lambda tset: project(task.model.image, tset.items.vectors)))
    summary["logit_scale"] = float(task.criterion.logit_scale.detach().exp())
    if cfg.export.onnx:
        summary["onnx"] = str(export_joint(run_dir / "best.pt", run_dir))
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


# ----------------------------------------------------------------------------------------- export
def export_joint(checkpoint: str | Path, out_dir: str | Path, *, version: str | None = None) -> Path:
    """Export a joint checkpoint's heads to ``out_dir`` (``image_head.onnx``, ``text_head.onnx``,
    ``joint.json``), each checked against PyTorch; returns the sidecar's path."""
    ckpt = load_checkpoint(checkpoint)
    meta = ckpt.get("joint")
    if meta is None:
        raise VestisError(f"{checkpoint} is not a joint text-image checkpoint")
    cfg = config_from_dict(ckpt["config"], str(checkpoint))
    image, text = joint_heads(cfg, meta["image_dim"], meta["text_dim"])
    for name, head in (("image", image), ("text", text)):
        head.load_state_dict({k.removeprefix(f"{name}."): v for k, v in ckpt["model"].items()
                              if k.startswith(f"{name}.")})
    return write_joint_model(
        image, text, out_dir, name=cfg.export.name or cfg.name, version=version or cfg.export.version,
        image_encoder=ckpt["backbone"], image_encoder_version=ckpt["encoder_version"],
        text_encoder=cfg.text.encoder, text_encoder_version=meta["text_encoder_version"],
        logit_scale=float(torch.as_tensor(ckpt["criterion"]["logit_scale"]).exp()),
        text={"column": cfg.text.column, "templates": cfg.text.templates, "synonym_rate": cfg.text.synonym_rate},
        epoch=ckpt["best"]["epoch"],
        checkpoint=str(checkpoint))


def write_joint_model(image_head: nn.Module, text_head: Projection, out_dir: str | Path, *, name: str, version: str,
                      image_encoder: str, image_encoder_version: str, text_encoder: str,
                      text_encoder_version: str, logit_scale: float, **extra: Any) -> Path:
    """Export both heads (each checked against PyTorch) and write ``joint.json`` with the towers'
    names and versions and ``extra`` facts about the run; returns the sidecar's path."""
    out_dir = Path(out_dir)
    gen = torch.Generator().manual_seed(0)
    diffs = {
        "image": export_module(Normalised(image_head), F.normalize(torch.randn(4, image_head.in_dim, generator=gen)),
                               out_dir / "image_head.onnx", IMAGE_INPUT, [EMBEDDING]),
        "text": export_module(Normalised(text_head), F.normalize(torch.randn(4, text_head.in_dim, generator=gen)),
                              out_dir / "text_head.onnx", TEXT_INPUT, [EMBEDDING]),
    }
    sidecar = {
        "kind": MODEL_KIND, "name": name, "version": version, "image_head": "image_head.onnx",
        "text_head": "text_head.onnx", "dim": image_head.dim, "image_encoder": image_encoder,
        "image_encoder_version": image_encoder_version, "text_encoder": text_encoder,
        "text_encoder_version": text_encoder_version, "logit_scale": logit_scale, **extra,
        "onnx_max_abs_diff": diffs,
    }
    path = out_dir / SIDECAR
    path.write_text(json.dumps(sidecar, indent=2))
    return path

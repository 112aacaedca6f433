"""Attribute-aware embeddings (ASEN / RPF style): one embedding space per attribute.

"Same sleeve length as this photo" needs a similarity that looks at the sleeves and ignores the
colour; a global embedding mixes everything. Following ASEN (Ma et al., AAAI 2020), an embedding
of the attribute guides

- a **spatial attention** over the backbone's feature map (where on the garment to look):
  ``alpha = softmax_hw(w . (tanh(conv1x1(map)) * tanh(W_s e_a)))`` and the attended feature
  ``l = sum_hw alpha * map``;
- a **channel attention** (which features matter): ``beta = sigmoid(W_2 relu(W_1 [x; e_a]))``
  over ``x = [LN(l); LN(g)]``, the attended feature and, with ``model.global_branch``, the
  backbone's pooled global embedding ``g`` (ASEN v2's global branch: category and colour live there);

then ``beta * x`` is projected to ``dim`` and L2-normalised: one vector per (image, attribute).

**Keeping what the backbone knew** (``head.residual``, as for the global heads): each attribute's
embedding is the backbone's global embedding, centred on the training mean and projected on its
first ``dim`` principal components (fitted on the training items, :meth:`AttributeEmbedder.fit_start`),
plus the learned projection above, which starts at zero; ``head.anchor`` weighs a penalty on the
projection's squared size (L2-SP towards the start, :class:`vestis.train.heads.IdentityAnchor`);
``head.interpolate`` a scales the trained projection in the retrieval embedding (start + a x
projection). Every space starts as the backbone's similarity, which transfers to other photos,
instead of a random projection of the attended map.

**Which map.** The 14 x 14 map of the stride-16 stage (112 channels for EfficientNet-Lite0,
``feature_map_14``) at the 224-px input: a 16-px cell is about a sleeve's width or a collar, so
attention can single them out, where one cell of the 7 x 7 stride-32 map covers a whole shoulder
with sleeve and collar together; and at 112 x 196 values it is 5.7x smaller than the 1280 x 49
final map, so caching it for a 44k catalogue takes 1.9 GB in float16 rather than 11 GB. What the
mid-level map lacks in semantics the global branch brings back.

**Training** (``vestis train --config configs/clothing-attributes-asen.yaml``: a config with a
``model`` section, :class:`vestis.train.config.AttributeRunConfig`) runs on cached maps
(:mod:`vestis.store.feature_cache`) with the shared run, trainer and export
(:func:`vestis.train.command.run`, :class:`vestis.train.trainer.Trainer`,
:func:`vestis.train.export.export_module`); this module gives the model, its loss, its test and its export
(:class:`AttributeModel`): a training sample is an (item, attribute)
pair whose class is the attribute's value; batches hold ``head.m_per_class`` pairs of each of
several (attribute, value) classes, and the loss is a triplet ranking loss on cosine similarity,
``max(0, margin - cos(a, p) + cos(a, n))`` with margin 0.2, where the positive shares the
anchor's value of the attribute and the negative is a pair of the SAME attribute with another
value (attribute-specific triplets; batch-hard mining with ``head.miner: batch-hard``, every valid
triplet with ``none``). Model selection uses the attribute-specific mAP@10 of the validation split.

RPF's foreground/background contrast is not implemented: the datasets here have no masks, and
catalogue photos are mostly on plain backgrounds.

The export (``model.onnx`` + ``model.json``) takes the backbone's ``feature_map_14`` and
``embedding`` and returns ``attribute_embeddings`` (N x attributes x dim), so one backbone pass
serves the global search and every attribute (see :mod:`vestis.encoders.attribute_encoder`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vestis.encoders.onnx_encoder import EMBEDDING, FEATURE_MAPS
from vestis.errors import VestisError
from vestis.eval.protocols import attribute_map
from vestis.store.feature_cache import CachedFeatures, cached_features
from vestis.train.config import AttributeRunConfig, DataConfig, config_from_dict
from vestis.train.export import export_module
from vestis.train.features import Items, resolve_split
from vestis.train.heads import IdentityAnchor
from vestis.train.trainer import TrainingTask, class_labels, load_checkpoint
from vestis.train.transfer import TransferSet

log = logging.getLogger(__name__)

OUTPUT = "attribute_embeddings"
MODEL_KIND = "vestis-attribute-model"


# ----------------------------------------------------------------------------------------- model
class AttributeEmbedder(nn.Module):
    """ASEN-style attribute-conditioned embedding of a feature map (see the module docstring)."""

    def __init__(
        self,
        n_attributes: int,
        channels: int,
        global_dim: int,
        dim: int,
        *,
        attribute_dim: int = 64,
        hidden: int = 256,
        dropout: float = 0.0,
        residual: bool = False,
        interpolate: float = 1.0,
    ):
        super().__init__()
        if residual and not 0 < dim <= global_dim:
            raise VestisError(f"a residual attribute model starts from the global embedding: it needs the global "
                              f"branch and head.dim at most its size ({global_dim}), got {dim}")
        self.n_attributes, self.in_dim, self.global_dim, self.dim = n_attributes, channels, global_dim, dim
        self.residual, self.interpolate = residual, interpolate
        self.attribute = nn.Embedding(n_attributes, attribute_dim)
        self.map_key = nn.Conv2d(channels, hidden, 1)
        self.attr_query = nn.Linear(attribute_dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)
        self.local_norm = nn.LayerNorm(channels)
        self.global_norm = nn.LayerNorm(global_dim) if global_dim else None
        width = channels + global_dim
        self.channel = nn.Sequential(
            nn.Linear(width + attribute_dim, hidden), nn.ReLU(), nn.Linear(hidden, width), nn.Sigmoid()
        )
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(width, dim)
        if residual:
            nn.init.zeros_(self.project.weight)
            nn.init.zeros_(self.project.bias)
            self.register_buffer("centre", torch.zeros(global_dim))
            self.register_buffer("basis", torch.zeros(dim, global_dim))

    @torch.no_grad()
    def fit_start(self, global_vecs: torch.Tensor) -> None:
        """The residual start: centre on the mean of the (normalised) training embeddings
        ``global_vecs`` and keep their first ``dim`` principal directions."""
        x = F.normalize(global_vecs.float(), dim=1)
        self.centre.copy_(x.mean(dim=0))
        z = F.normalize(x - self.centre, dim=1)
        _, vectors = torch.linalg.eigh(z.T @ z)  # ascending eigenvalues
        self.basis.copy_(vectors[:, -self.dim :].flip(1).T)

    def start(self, global_vec: torch.Tensor) -> torch.Tensor:
        """The residual start of images' global embeddings (N x dim, not normalised): centred and
        projected on the principal directions of :meth:`fit_start`."""
        return F.normalize(F.normalize(global_vec, dim=1) - self.centre, dim=1) @ self.basis.T

    def correction_norm(self) -> torch.Tensor:
        """The squared size of the learned projection, zero at the residual start (for
        :class:`vestis.train.heads.IdentityAnchor`)."""
        return self.project.weight.square().sum() + self.project.bias.square().sum()

    def attention(self, maps: torch.Tensor, attrs: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Spatial attention weights (N x A' x h x w) of maps (N x C x h x w) for attribute
        indices ``attrs`` (N x A': per image, the attributes to attend for). With ``image`` (N,),
        ``maps`` holds distinct images and row i of the output attends ``maps[image[i]]``: the
        attention keys are computed once per image."""
        keys = torch.tanh(self.map_key(maps))  # N x K x h x w
        if image is not None:
            keys = keys[image]
        queries = torch.tanh(self.attr_query(self.attribute(attrs))) * self.score.weight[0]  # N x A' x K
        logits = torch.einsum("nkhw,nak->nahw", keys, queries)
        n, a, h, w = logits.shape
        return torch.softmax(logits.reshape(n, a, h * w), dim=2).reshape(n, a, h, w)

    def embed(self, maps: torch.Tensor, global_vec: torch.Tensor | None, attrs: torch.Tensor,
              image: torch.Tensor | None = None, correction: float = 1.0) -> torch.Tensor:
        """L2-normalised embeddings N x A' x dim for attribute indices ``attrs`` (N x A'); ``image``
        as in :meth:`attention`; ``correction`` scales a residual model's learned projection."""
        alpha = self.attention(maps, attrs, image)
        start = self.start(global_vec) if self.residual and global_vec is not None else None  # once per image
        if image is not None:
            maps = maps[image]
            global_vec = None if global_vec is None else global_vec[image]
            start = None if start is None else start[image]
        local = self.local_norm(torch.einsum("nahw,nchw->nac", alpha, maps))
        parts = [local]
        if self.global_norm is not None:
            if global_vec is None:
                raise VestisError("this attribute model has a global branch: give the global embedding")
            parts.append(self.global_norm(global_vec)[:, None, :].expand(-1, attrs.shape[1], -1))
        x = torch.cat(parts, dim=2)
        beta = self.channel(torch.cat([x, self.attribute(attrs)], dim=2))
        out = self.project(self.dropout(beta * x))
        if start is not None:
            out = correction * out + start[:, None, :]
        return F.normalize(out, dim=2)

    def forward(self, maps: torch.Tensor, global_vec: torch.Tensor | None, attrs: torch.Tensor,
                image: torch.Tensor | None = None) -> torch.Tensor:
        """One attribute per row: ``attrs`` (N,) -> N x dim; ``image`` as in :meth:`attention`."""
        return self.embed(maps, global_vec, attrs[:, None], image)[:, 0]

    def all_attributes(self, maps: torch.Tensor, global_vec: torch.Tensor | None) -> torch.Tensor:
        """Every attribute for every image, the retrieval embedding: N x A x dim. A residual model's
        learned projection is scaled by ``interpolate`` (``head.interpolate``; training uses all of it)."""
        attrs = torch.arange(self.n_attributes, device=maps.device)[None, :].expand(maps.shape[0], -1)
        return self.embed(maps, global_vec, attrs, correction=self.interpolate)


class AttributeTripletLoss(nn.Module):
    """Triplet ranking loss on cosine similarity, negatives from the anchor's attribute only.

    ``labels`` are (attribute, value) class indices; ``class_attribute[c]`` is the attribute of
    class c. For each anchor, positives are the other pairs of its class and negatives the pairs of
    the same attribute with another value. ``batch_hard`` takes the least similar positive and the
    most similar negative; otherwise the loss averages every valid triplet that violates the margin."""

    needs_m_per_class = True

    def __init__(self, class_attribute: list[int], margin: float = 0.2, batch_hard: bool = True):
        super().__init__()
        self.margin, self.batch_hard = margin, batch_hard
        self.register_buffer(
            "class_attribute", torch.as_tensor(class_attribute, dtype=torch.long), persistent=False
        )

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        emb = F.normalize(embeddings, dim=1)
        sim = emb @ emb.T
        attr = self.class_attribute[labels]
        same_attr = attr[:, None] == attr[None, :]
        same_class = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos, neg = same_class & ~eye, same_attr & ~same_class
        if self.batch_hard:
            valid = pos.any(1) & neg.any(1)
            hardest_pos = sim.masked_fill(~pos, math.inf).min(1).values
            hardest_neg = sim.masked_fill(~neg, -math.inf).max(1).values
            losses = F.relu(self.margin - hardest_pos + hardest_neg)[valid]
        else:
            triplets = pos[:, :, None] & neg[:, None, :]
            all_losses = F.relu(self.margin - sim[:, :, None] + sim[:, None, :])[triplets]
            losses = all_losses[all_losses > 0]
        loss = losses.mean() if len(losses) else sim.sum() * 0.0
        return loss, {"triplet": float(loss.detach())}


class PairModel(nn.Module):
    """The trainer's model: a batch of (item, attribute) pair indices -> their embeddings, the
    cached features gathered from the (memory-mapped) arrays. Only ``head`` has parameters."""

    def __init__(
        self,
        head: AttributeEmbedder,
        maps: np.ndarray | RowView,
        global_vecs: np.ndarray | RowView | None,
        pair_item: np.ndarray,
        pair_attribute: np.ndarray,
    ):
        super().__init__()
        self.head = head
        self.maps, self.global_vecs = maps, global_vecs
        self.pair_item, self.pair_attribute = pair_item, pair_attribute

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        index = pairs.cpu().numpy()
        rows = self.pair_item[index]
        unique, inverse = np.unique(rows, return_inverse=True)  # sorted: sequential reads of the memory map
        device = self.head.project.weight.device
        maps = torch.from_numpy(np.asarray(self.maps[unique], np.float32)).to(device)
        glob = None
        if self.global_vecs is not None:
            glob = torch.from_numpy(np.asarray(self.global_vecs[unique], np.float32)).to(device)
        attrs = torch.from_numpy(self.pair_attribute[index]).to(device)
        return self.head(maps, glob, attrs, torch.from_numpy(inverse).to(device))


class PairIndices(torch.utils.data.Dataset):
    """Pair indices as tensors (the inputs of :class:`PairModel`)."""

    def __init__(self, pairs: np.ndarray):
        self.pairs = torch.as_tensor(pairs, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.pairs[i]


# ----------------------------------------------------------------------------------------- data
class RowView:
    """The rows of a (memory-mapped) array in item order, read only when indexed: the cache's row
    order may differ from the items' and copying a 2 GB cache to reorder it is not an option."""

    def __init__(self, array: np.ndarray, rows: np.ndarray):
        self.array, self.rows = array, rows
        self.shape = (len(rows), *array.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.array[self.rows[index]]


@dataclass
class AttributeData:
    """Items with their cached features, and the (item, attribute) pairs that have a label."""

    items: Items
    maps: RowView  # N x C x h x w float16 (memory-mapped)
    global_vecs: RowView  # N x G float16
    attributes: list[str]
    pair_item: np.ndarray
    pair_attribute: np.ndarray
    pair_value: np.ndarray  # object array of str

    @property
    def groups(self) -> np.ndarray:
        return np.array(
            [f"{self.attributes[a]}={v}" for a, v in zip(self.pair_attribute, self.pair_value)], dtype=object
        )


def feature_sources(data_cfg: Any, runs_dir: Path) -> tuple[list[tuple[str, str, Any]], Items, Path]:
    """``(id, change key, read)`` of every item, their :class:`Items` (metadata, no vectors) and the
    feature cache folder: ``<collection>/features`` for a collection, else ``data.feature_cache``
    or ``<runs>/features``."""
    from vestis.encoders import get_encoder

    if data_cfg.collection is not None:
        from vestis.data.sources import read_source
        from vestis.store.collection import Collection

        path = Path(data_cfg.collection)
        with Collection.open(path) as coll:
            stored = list(coll.iter_items())
            name, version = coll.encoder_name, coll.encoder_version
        triples = [(it.id, it.hash, lambda s=it.source: read_source(s)) for it in stored]
        items = Items(
            [it.id for it in stored],
            [it.source for it in stored],
            [it.metadata for it in stored],
            name,
            version,
        )
        default_dir = path / "features"
    else:
        from vestis.data import open_catalogue

        catalogue = list(open_catalogue(data_cfg.source, data_cfg.format, **data_cfg.options))
        if not catalogue:
            raise VestisError(f"catalogue {data_cfg.source} holds no items")
        encoder = get_encoder(data_cfg.encoder)
        triples = [(it.id, it.stamp, it.read) for it in catalogue]
        items = Items(
            [it.id for it in catalogue],
            [it.source for it in catalogue],
            [it.metadata for it in catalogue],
            encoder.name,
            encoder.version,
        )
        default_dir = runs_dir / "features"
    directory = Path(data_cfg.feature_cache) if data_cfg.feature_cache else default_dir
    return triples, items, directory


def item_features(data_cfg: Any, runs_dir: Path, map_name: str, *, progress: bool = True) -> tuple[Items, CachedFeatures]:
    """The items of a collection or catalogue whose image could be read, and their cached feature
    maps ``map_name`` and global embeddings (computed on first use, see :func:`feature_sources`)."""
    from vestis.encoders import get_encoder

    triples, items, directory = feature_sources(data_cfg, runs_dir)
    encoder = get_encoder(items.encoder_name)
    if encoder.version != items.encoder_version:
        raise VestisError(
            f"the collection was built with {items.encoder_version}, but {items.encoder_name} is now "
            f"{encoder.version}: re-index it first"
        )
    cache = cached_features(triples, encoder, directory, [map_name, EMBEDDING], progress=progress)
    keep = [i for i, item_id in enumerate(items.ids) if item_id in cache.row]
    if len(keep) < len(items):
        log.warning("%s: %d items have no features (unreadable images) and are left out",
                    data_cfg.collection or data_cfg.source, len(items) - len(keep))
    return items.subset(keep), cache


def feature_views(cache: CachedFeatures, ids: list[str], map_name: str) -> tuple[RowView, RowView]:
    """The cached feature maps and global embeddings of ``ids``, in that order."""
    rows = cache.rows(ids)
    return RowView(cache.arrays[map_name], rows), RowView(cache.arrays[EMBEDDING], rows)


def load_attribute_data(cfg: AttributeRunConfig, *, progress: bool = True) -> AttributeData:
    """Items, their cached backbone features (computed on first use) and the labelled pairs."""
    map_name = FEATURE_MAPS[cfg.model.feature_map]
    items, cache = item_features(cfg.data, cfg.run_dir.parent, map_name, progress=progress)
    maps, global_vecs = feature_views(cache, items.ids, map_name)
    missing = [a for a in cfg.model.attributes if not any(a in m for m in items.metadata)]
    if missing:
        known = sorted({k for m in items.metadata[:1000] for k in m})
        raise VestisError(
            f"no item has the attribute(s) {', '.join(missing)}; columns present: {', '.join(known)}"
        )
    pair_item, pair_attribute, pair_value = [], [], []
    for i, meta in enumerate(items.metadata):
        for a, name in enumerate(cfg.model.attributes):
            value = meta.get(name)
            if value is not None and str(value).strip():
                pair_item.append(i)
                pair_attribute.append(a)
                pair_value.append(str(value).strip())
    return AttributeData(
        items,
        maps,
        global_vecs,
        list(cfg.model.attributes),
        np.array(pair_item, np.int64),
        np.array(pair_attribute, np.int64),
        np.array(pair_value, dtype=object),
    )


def make_head(
    cfg: AttributeRunConfig, n_attributes: int, channels: int, global_dim: int
) -> AttributeEmbedder:
    return AttributeEmbedder(
        n_attributes,
        channels,
        global_dim if cfg.model.global_branch else 0,
        cfg.head.dim,
        attribute_dim=cfg.model.attribute_dim,
        hidden=cfg.model.hidden,
        dropout=cfg.model.dropout,
        residual=cfg.head.residual,
        interpolate=cfg.head.interpolate,
    )


def attribute_task(cfg: AttributeRunConfig, data: AttributeData, item_split: np.ndarray) -> TrainingTask:
    """The trainer's task over (item, attribute) pairs; (attribute, value) classes with fewer than
    two training pairs cannot give a positive and are not anchors. With ``model.max_train_items``
    only a seeded sample of the training items is used."""
    split = item_split[data.pair_item].copy()
    train_items = np.flatnonzero(np.isin(item_split.astype(str), cfg.train.train_splits))
    if 0 < cfg.model.max_train_items < len(train_items):
        rng = np.random.default_rng(cfg.train.seed)
        unused = np.setdiff1d(train_items, rng.choice(train_items, cfg.model.max_train_items, replace=False))
        split[np.isin(data.pair_item, unused)] = "unused"  # neither trained on nor in the validation gallery
    groups = data.groups
    train = np.isin(split.astype(str), cfg.train.train_splits)
    counts: dict[str, int] = {}
    for g in groups[train]:
        counts[g] = counts.get(g, 0) + 1
    anchors = np.array([counts.get(g, 0) >= 2 for g in groups])
    classes, labels = class_labels(np.where(anchors, groups, None), split, cfg.train.train_splits)
    class_attribute = [data.attributes.index(c.partition("=")[0]) for c in classes]
    head = make_head(cfg, len(data.attributes), data.maps.shape[1], data.global_vecs.shape[1])
    if head.residual:
        head.fit_start(torch.from_numpy(np.asarray(data.global_vecs[train_items], np.float32)))
    model = PairModel(
        head,
        data.maps,
        data.global_vecs if cfg.model.global_branch else None,
        data.pair_item,
        data.pair_attribute,
    )
    criterion = AttributeTripletLoss(class_attribute, cfg.head.triplet_margin, cfg.head.miner == "batch-hard")
    params = [{"params": list(head.parameters()), "lr": cfg.train.lr}]
    meta = {
        "attributes": data.attributes,
        "channels": head.in_dim,
        "global_dim": head.global_dim,
        "values": {
            a: sorted(set(data.pair_value[data.pair_attribute == i])) for i, a in enumerate(data.attributes)
        },
    }
    return TrainingTask(
        1,
        model,
        head,
        criterion,
        params,
        lambda rows, augment: PairIndices(rows),
        data.items,
        groups,
        split,
        classes,
        labels,
        data.items.encoder_name,
        partition=data.pair_attribute,
        checkpoint_extra={"attribute_model": meta},
        regulariser=IdentityAnchor(head, cfg.head.anchor) if cfg.head.anchor else None,
    )


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


@torch.no_grad()
def embed_items(
    head: AttributeEmbedder,
    maps: np.ndarray | RowView,
    global_vecs: np.ndarray | RowView | None,
    rows: np.ndarray,
    batch_size: int = 256,
) -> np.ndarray:
    """Every attribute's embedding of the items at ``rows``: len(rows) x A x dim float32."""
    head.eval()
    device = head.project.weight.device
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        glob = None if global_vecs is None else torch.from_numpy(np.asarray(global_vecs[chunk], np.float32))
        maps_chunk = torch.from_numpy(np.asarray(maps[chunk], np.float32)).to(device)
        out.append(head.all_attributes(maps_chunk, None if glob is None else glob.to(device)).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, head.n_attributes, head.dim), np.float32)


def evaluate_attribute_map(
    data: AttributeData, item_split: np.ndarray, head: AttributeEmbedder, global_branch: bool
) -> dict[str, Any]:
    """Attribute MAP (ASEN / RPF protocol, full ranking within the test items) of the model and of
    the backbone's global embedding."""
    test = np.flatnonzero(item_split.astype(str) == "test")
    if len(test) == 0:
        raise VestisError("the test split is empty")
    metadata = [data.items.metadata[i] for i in test]
    present = [a for a in data.attributes if any(a in m for m in metadata)]
    emb = embed_items(head, data.maps, data.global_vecs if global_branch else None, test)
    per_attribute = {a: emb[:, data.attributes.index(a)] for a in present}
    baseline = np.asarray(data.global_vecs[test], np.float32)
    baseline /= np.maximum(np.linalg.norm(baseline, axis=1, keepdims=True), 1e-12)
    return {
        "model": attribute_map(per_attribute, metadata, present),
        "global_features": attribute_map(baseline, metadata, present),
    }


# ----------------------------------------------------------------------------------------- export
class AttributeGraph(nn.Module):
    """(feature map, global embedding) -> every attribute's embedding (N x A x dim)."""

    def __init__(self, head: AttributeEmbedder):
        super().__init__()
        self.head = head

    def forward(self, feature_map: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.head.all_attributes(feature_map, embedding if self.head.global_dim else None)


def load_head(checkpoint: str | Path) -> tuple[AttributeEmbedder, dict[str, Any]]:
    """The trained head of an attribute-model checkpoint, and the checkpoint."""
    ckpt = load_checkpoint(checkpoint)
    meta = ckpt.get("attribute_model")
    if meta is None:
        raise VestisError(f"{checkpoint} is not an attribute-model checkpoint")
    cfg = config_from_dict(ckpt["config"])
    head = make_head(cfg, len(meta["attributes"]), meta["channels"], meta["global_dim"])
    head.load_state_dict({k.removeprefix("head."): v for k, v in ckpt["model"].items()})
    return head.eval(), ckpt


def export_attribute_model(
    checkpoint: str | Path, path: str | Path | None = None, *, name: str | None = None, version: str = "1"
) -> Path:
    """Export an attribute-model checkpoint to ONNX (inputs ``feature_map_14`` or ``feature_map``,
    and ``embedding``; output ``attribute_embeddings``) with its sidecar JSON, checked against
    PyTorch by :func:`vestis.train.export.export_module`."""
    head, ckpt = load_head(checkpoint)
    cfg = ckpt["config"]
    out = Path(path) if path is not None else Path(checkpoint).with_name("model.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    map_name = FEATURE_MAPS[cfg["model"]["feature_map"]]
    side = 14 if cfg["model"]["feature_map"] == "14x14" else 7
    gen = torch.Generator().manual_seed(0)
    example = (
        torch.rand(3, head.in_dim, side, side, generator=gen) * 6,
        F.normalize(torch.randn(3, max(head.global_dim, 1), generator=gen), dim=1),
    )
    diff = export_module(AttributeGraph(head), example, out, [map_name, EMBEDDING], [OUTPUT])
    meta = ckpt["attribute_model"]
    sidecar = {
        "kind": MODEL_KIND,
        "name": name or cfg["export"]["name"] or cfg["name"],
        "version": version,
        "backbone": ckpt["backbone"],
        "backbone_version": ckpt["encoder_version"],
        "feature_map": map_name,
        "attributes": meta["attributes"],
        "values": meta["values"],
        "dim": head.dim,
        "epoch": ckpt["best"]["epoch"],
        "checkpoint": str(checkpoint),
        "config": {k: cfg[k] for k in ("model", "head")},
        "onnx_max_abs_diff": diff,
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    return out


__all__ = [
    "AttributeEmbedder",
    "AttributeModel",
    "AttributeTripletLoss",
    "export_attribute_model",
]

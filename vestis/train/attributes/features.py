"""The attribute model's inputs: cached backbone feature maps and the labelled (item, attribute) pairs.

Training reads the feature maps many times, so they are computed once per item and kept in a
memory-mapped cache (:mod:`vestis.store.feature_cache`), in float16, beside the collection's
files (``features/``) or in ``data.feature_cache``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np

from vestis.encoders.base import ImageEncoder
from vestis.encoders.onnx_encoder import EMBEDDING, FEATURE_MAPS
from vestis.errors import VestisError
from vestis.store.feature_cache import CachedFeatures, cached_features
from vestis.train.config import AttributeRunConfig, DataConfig
from vestis.train.features import Items, catalogue_items, opened, stored_items

log = logging.getLogger(__name__)


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


def feature_sources(data: DataConfig, runs_dir: Path) -> tuple[list[tuple[str, str, Callable[[], bytes]]], Items,
                                                                  ImageEncoder]:
    """``(id, change key, read)`` of every item, their :class:`Items` (metadata, no vectors;
    ``cache_dir`` is the feature cache folder) and the backbone that computes their features."""
    from vestis.encoders import get_encoder

    if data.collection is None:
        encoder = get_encoder(data.encoder)
        catalogue, items = catalogue_items(data, runs_dir, encoder)
        return [(it.id, it.stamp, it.read) for it in catalogue], items, encoder
    from vestis.data.sources import read_source

    with opened(data.collection) as coll:
        stored, items = stored_items(coll, data)
    encoder = get_encoder(items.encoder_name)
    if encoder.version != items.encoder_version:
        raise VestisError(
            f"the collection was built with {items.encoder_version}, but {items.encoder_name} is now "
            f"{encoder.version}: re-index it first"
        )
    return [(it.id, it.hash, lambda s=it.source: read_source(s)) for it in stored], items, encoder


def item_features(data: DataConfig, runs_dir: Path, map_name: str, *,
                  progress: bool = True) -> tuple[Items, CachedFeatures]:
    """The items of a collection or catalogue whose image could be read, and their cached feature
    maps ``map_name`` and global embeddings (computed on first use, see :func:`feature_sources`)."""
    triples, items, encoder = feature_sources(data, runs_dir)
    cache = cached_features(triples, encoder, items.cache_dir, [map_name, EMBEDDING], progress=progress)
    keep = [i for i, item_id in enumerate(items.ids) if item_id in cache.row]
    if len(keep) < len(items):
        log.warning("%s: %d items have no features (unreadable images) and are left out",
                    data.collection or data.source, len(items) - len(keep))
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

"""Training inputs: the items, their labels, their split, and (stage 1) their backbone features.

Stage 1 trains a head on frozen-backbone features, so they are computed once:

- from a collection (``data.collection``, a folder or a Milvus location, opened through
  :func:`vestis.store.factory.open_collection`): the stored vectors ARE the pooled backbone
  features (L2-normalised, e.g. 1280-d for EfficientNet-Lite0); nothing is recomputed;
- from a catalogue (``data.source``): features are computed with ``data.encoder`` and cached as
  ``<feature_cache>/<name>-<key>.npz`` (ids, change stamps, vectors, encoder version). A later run
  reuses them and embeds only items that are new or whose stamp changed.

The split (train/val/test by item id, stratified by label group, fixed seed) comes from
:func:`vestis.eval.protocols.split_by_id`; it is written to a CSV the first time and read back on
every later run, so all runs of an experiment and its evaluation share it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vestis.data.base import CatalogueItem
from vestis.encoders.base import ImageEncoder
from vestis.errors import VestisError
from vestis.eval.protocols import group_labels, load_split, save_split, split_by_id
from vestis.store.db import Item
from vestis.store.protocol import CollectionStore
from vestis.train.config import DataConfig

log = logging.getLogger(__name__)


@dataclass
class Items:
    """Row-aligned item data. ``vectors`` (N x D float32, L2-normalised) is None when not loaded;
    ``encoder_name``/``encoder_version`` name the encoder that produced them (or would);
    ``cache_dir`` is the folder that caches computed features of these items (``data.feature_cache``,
    else ``features/`` among a collection's files or ``<runs>/features`` for a catalogue)."""

    ids: list[str]
    sources: list[str]
    metadata: list[dict[str, Any]]
    encoder_name: str
    encoder_version: str
    vectors: np.ndarray | None = None
    cache_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: list[int] | np.ndarray) -> Items:
        """The items at ``rows``, in that order."""
        return Items([self.ids[i] for i in rows], [self.sources[i] for i in rows], [self.metadata[i] for i in rows],
                     self.encoder_name, self.encoder_version, None if self.vectors is None else self.vectors[rows],
                     self.cache_dir)

    def groups(self, columns: list[str]) -> np.ndarray:
        """The label group of each item (values of ``columns`` joined by "|"; None when any is missing)."""
        missing = [c for c in columns if not any(c in m for m in self.metadata)]
        if missing:
            known = sorted({k for m in self.metadata[:1000] for k in m})
            raise VestisError(f"no item has the label column(s) {', '.join(missing)}; "
                              f"columns present: {', '.join(known) or 'none'}")
        return group_labels(self.metadata, columns)


def load_items(data: DataConfig, runs_dir: Path, *, features: bool = True) -> Items:
    """Items of the configured collection or catalogue, with their features when ``features``."""
    if data.collection is not None:
        return _collection_items(data, features)
    return _catalogue_items(data, runs_dir, features)


@contextmanager
def opened(location: str) -> Iterator[CollectionStore]:
    """The collection at ``location`` (a folder or a Milvus location, through the store factory),
    closed on leaving."""
    from vestis.store.factory import open_collection

    coll = open_collection(location)
    try:
        yield coll
    finally:
        coll.close()


def _collection_items(data: DataConfig, features: bool) -> Items:
    with opened(data.collection) as coll:
        stored, items = stored_items(coll, data)
        if features:
            table = coll.table()
            items.vectors = table.view[1][table.rows_of(np.array([it.vid for it in stored], np.int64))].copy()
        return items


def stored_items(coll: CollectionStore, data: DataConfig) -> tuple[list[Item], Items]:
    """A collection's stored items, and their :class:`Items` without vectors."""
    stored = list(coll.iter_items())
    cache_dir = Path(data.feature_cache) if data.feature_cache else coll.path / "features"
    return stored, Items([it.id for it in stored], [it.source for it in stored], [it.metadata for it in stored],
                         coll.encoder_name, coll.encoder_version, cache_dir=cache_dir)


def catalogue_items(data: DataConfig, runs_dir: Path, encoder: ImageEncoder) -> tuple[list[CatalogueItem], Items]:
    """A catalogue's entries, and their :class:`Items` without vectors (``encoder``'s features)."""
    from vestis.data import open_catalogue

    catalogue = list(open_catalogue(data.source, data.format, **data.options))
    if not catalogue:
        raise VestisError(f"catalogue {data.source} holds no items")
    cache_dir = Path(data.feature_cache) if data.feature_cache else runs_dir / "features"
    return catalogue, Items([it.id for it in catalogue], [it.source for it in catalogue],
                            [it.metadata for it in catalogue], encoder.name, encoder.version, cache_dir=cache_dir)


def _catalogue_items(data: DataConfig, runs_dir: Path, features: bool) -> Items:
    from vestis.encoders import get_encoder

    encoder = get_encoder(data.encoder)
    catalogue, items = catalogue_items(data, runs_dir, encoder)
    if not features:
        return items
    cache_dir = items.cache_dir
    key = json.dumps([str(Path(data.source).resolve()) if Path(data.source).exists() else data.source,
                      data.format, data.options, encoder.version], sort_keys=True)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(data.source)).stem)[:40]
    cache = cache_dir / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"
    cached: dict[tuple[str, str], np.ndarray] = {}
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["encoder_version"]) == encoder.version:
                cached = {(i, s): v for i, s, v in zip(z["ids"].tolist(), z["stamps"].tolist(), z["vectors"])}
    todo = [it for it in catalogue if (it.id, it.stamp) not in cached]
    if todo:
        cached.update(_embed(encoder, todo))
        cache_dir.mkdir(parents=True, exist_ok=True)
        keep = [it for it in catalogue if (it.id, it.stamp) in cached]
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, ids=np.array([it.id for it in keep]), stamps=np.array([it.stamp for it in keep]),
                 vectors=np.stack([cached[it.id, it.stamp] for it in keep]).astype(np.float32),
                 encoder_version=np.array(encoder.version))
        tmp.replace(cache)
        log.info("features of %d items written to %s", len(keep), cache)
    rows = [i for i, it in enumerate(catalogue) if (it.id, it.stamp) in cached]
    if len(rows) < len(catalogue):
        log.warning("%d items have no features (unreadable images) and are left out", len(catalogue) - len(rows))
    return Items([items.ids[i] for i in rows], [items.sources[i] for i in rows], [items.metadata[i] for i in rows],
                 items.encoder_name, items.encoder_version,
                 np.stack([cached[catalogue[i].id, catalogue[i].stamp] for i in rows]).astype(np.float32), cache_dir)


def _embed(encoder: ImageEncoder, items: list[CatalogueItem]) -> dict[tuple[str, str], np.ndarray]:
    """Features of catalogue items keyed by (id, stamp); unreadable images are logged and left out."""
    from vestis.encoders.pipeline import embed_items

    out: dict[tuple[str, str], np.ndarray] = {}
    failures = 0
    for batch in embed_items(encoder, (((it.id, it.stamp), it.read) for it in items), with_colour=False,
                             total=len(items)):
        out.update(zip(batch.keys, batch.vectors))
        failures += len(batch.failures)
        for key, reason in batch.failures[:3]:
            log.warning("skipped %s: %s", key[0], reason)
    if failures:
        log.warning("%d images could not be read", failures)
    return out


def resolve_split(items: Items, data: DataConfig, run_dir: Path) -> tuple[np.ndarray, Path]:
    """The split name of every item, and the split file it is kept in (created when missing).

    A new split is made by :func:`split_by_id` over the label groups; with ``official_test`` the
    items whose metadata says ``split: test`` form the test split and the rest is split into
    train/val in the ratio of the first two fractions. An existing split file must cover every item."""
    path = Path(data.split_file) if data.split_file else run_dir / "split.csv"
    if path.exists():
        mapping = load_split(path)
        missing = [i for i in items.ids if i not in mapping]
        if missing:
            raise VestisError(f"split file {path} has no split for {len(missing)} items (e.g. {missing[0]}); "
                              "it was made for other data: point data.split_file elsewhere or delete it")
    else:
        mapping = new_split(items, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_split(path, mapping)
    return np.array([mapping[i] for i in items.ids], dtype=object), path


def new_split(items: Items, data: DataConfig) -> dict[str, str]:
    groups = items.groups(data.labels)
    train, val, test = data.split_fractions
    if not data.official_test:
        return split_by_id(items.ids, groups, (train, val, test), seed=data.split_seed)
    official = np.array([m.get("split") == "test" for m in items.metadata])
    if not official.any():
        raise VestisError("data.official_test is set but no item has split=test in its metadata")
    rest = np.flatnonzero(~official)
    mapping = split_by_id([items.ids[i] for i in rest], groups[rest], (train / (train + val), val / (train + val), 0.0),
                          seed=data.split_seed)
    mapping.update({items.ids[i]: "test" for i in np.flatnonzero(official)})
    return mapping

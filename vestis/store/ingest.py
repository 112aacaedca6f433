"""Incremental indexing of a catalogue into a collection (what ``vestis index`` runs).

Only new or changed images are embedded (by change stamp, then content hash): an image whose
bytes the collection already holds under any id (a renamed item, a moved or touched file) takes
the stored vectors instead of going through the encoder. Items that left the catalogue are
removed; each batch is committed on its own, so a killed run loses at most the batches in flight
(being embedded or written) and re-running finishes the job. Unreadable images are reported and
skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from vestis.data.base import Catalogue, CatalogueItem
from vestis.encoders.base import ImageEncoder
from vestis.encoders.colour import COLOUR_DIM, COLOUR_VERSION
from vestis.encoders.pipeline import EmbeddedBatch, StoredLookup, Transform, embed_items
from vestis.encoders.regions import RegionFinder
from vestis.locks import leaf_lock
from vestis.store.collection import Collection, NewItem
from vestis.store.factory import collection_exists, create_collection, open_collection

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    relabelled: int = 0
    reused: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (id, source, reason)
    duplicates: list[tuple[str, str, str, float]] = field(default_factory=list)  # (id, source, of, similarity)
    seconds: float = 0.0
    embedded: int = 0

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "relabelled": self.relabelled,
            "reused": self.reused,
            "failed": [{"id": i, "source": s, "reason": r} for i, s, r in self.failures],
            "skipped_duplicates": [{"id": i, "source": s, "duplicate_of": o, "score": round(x, 6)}
                                   for i, s, o, x in self.duplicates],
            "embedded": self.embedded,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
        }


class Embedder(Protocol):
    """Embeds catalogue items into batches keyed by item id (vectors, colours, content hashes,
    failures); ``stored`` may give vectors already held for the same bytes."""

    def __call__(self, encoder: ImageEncoder, items: list[CatalogueItem], *, batch_size: int, progress: bool,
                 stored: StoredLookup | None) -> Iterator[EmbeddedBatch[str]]: ...


def local_embedder(transform: Transform | None = None) -> Embedder:
    """Embed in this process: reading and decoding in threads (each decoded image changed by
    ``transform`` first), inference in batches."""

    def embed(encoder: ImageEncoder, items: list[CatalogueItem], *, batch_size: int, progress: bool,
              stored: StoredLookup | None) -> Iterator[EmbeddedBatch[str]]:
        return embed_items(encoder, ((item.id, item.read) for item in items), batch_size=batch_size,
                           with_colour=True, progress=progress, total=len(items), stored=stored, transform=transform)

    return embed


class RegionCrop:
    """Index photos of people by one garment region (``vestis index --crop``): each photo becomes
    that region cut out on the backdrop, or stays whole when no person (or not that region) is
    found; :attr:`whole` counts those. Thread-safe (the pipeline calls it from its threads)."""

    def __init__(self, name: str, finder: RegionFinder) -> None:
        self.name, self.finder = name, finder
        self.whole = 0
        self._lock = leaf_lock("region crop count")

    @property
    def setting(self) -> str:
        """What a collection records of it: the region and the finder's version."""
        return f"{self.name} {self.finder.version}"

    def __call__(self, image: Image.Image) -> Image.Image:
        found = self.finder.find(image, [self.name])
        if found:
            return found[0].image
        with self._lock:
            self.whole += 1
        return image


def open_or_create(path: Path | str, encoder: ImageEncoder, index_spec: str | None) -> Collection:
    """Open the collection at ``path`` (a directory or a Milvus location; checking the encoder) or
    create it for ``encoder``."""
    if collection_exists(path):
        collection = open_collection(path)
        collection.check_encoder(encoder.version)
        if index_spec and index_spec != collection.index_spec:
            collection.set_index_spec(index_spec)
        return collection
    return create_collection(
        path,
        encoder_name=encoder.name,
        encoder_version=encoder.version,
        encoder_source=encoder.source,
        dim=encoder.dim,
        colour_dim=COLOUR_DIM,
        colour_version=COLOUR_VERSION,
        index_spec=index_spec or "auto",
    )


def index_catalogue(
    collection: Collection,
    catalogue: Catalogue,
    encoder: ImageEncoder,
    *,
    batch_size: int = 32,
    remove_missing: bool = True,
    progress: bool = True,
    embed: Embedder | None = None,
    reject: Callable[[list[NewItem]], dict[str, tuple[str, float]]] | None = None,
) -> IngestReport:
    """Bring ``collection`` in line with ``catalogue``; see the module docstring. ``embed`` does the
    embedding (default :func:`local_embedder`; :class:`vestis.store.ray_ingest.RayEmbedder` on Ray).
    ``reject(new items)`` names the new items to leave out, with the stored item each duplicates
    (``--skip-duplicates``): they are reported in :attr:`IngestReport.duplicates`, not written."""
    collection.check_encoder(encoder.version)
    started = time.perf_counter()
    report = IngestReport()
    catalogue_key = str(catalogue.root)
    known = collection.stamps()
    seen: set[str] = set()
    todo: dict[str, CatalogueItem] = {}
    relabel: list[tuple[str, dict]] = []
    for item in catalogue:
        if item.id in seen:
            report.failures.append((item.id, item.source, "duplicate id in catalogue (first one kept)"))
            continue
        seen.add(item.id)
        old = known.get(item.id)
        if old is not None and old[0] == item.stamp and old[2] == item.source:
            report.unchanged += 1
            relabel.append((item.id, item.metadata))
        else:
            todo[item.id] = item

    if relabel:
        report.relabelled = _relabel(collection, relabel)

    ids_by_hash: dict[str, list[str]] = {}
    for item_id, (_stamp, content_hash, _source, _catalogue) in known.items():
        ids_by_hash.setdefault(content_hash, []).append(item_id)

    def stored(content_hash: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Vectors the collection holds for these bytes (under any id), read when the bytes are."""
        for item_id in ids_by_hash.get(content_hash, ()):
            if (found := collection.stored_vectors(item_id, content_hash)) is not None:
                return found
        return None

    for fresh, same_content, failures, reused in build_items(
        encoder, list(todo.values()), known, catalogue_key, batch_size=batch_size, progress=progress,
        stored=stored, embed=embed,
    ):
        for item_id, source, reason in failures:
            log.warning("skipped %s (%s): %s", item_id, source, reason)
        report.failures += failures
        if reject is not None:
            refused = reject([it for it in fresh if it.id not in known])
            report.duplicates += [(it.id, it.source, *refused[it.id]) for it in fresh if it.id in refused]
            fresh = [it for it in fresh if it.id not in refused]
        for it in fresh:
            if it.id in known:
                report.updated += 1
            else:
                report.added += 1
        report.embedded += len(fresh) + len(same_content) - reused
        report.reused += reused
        if same_content:
            collection.update_stamps(same_content)
            report.unchanged += len(same_content)
        collection.upsert(fresh)

    if remove_missing:
        gone = [i for i, (_s, _h, _src, cat) in known.items() if cat == catalogue_key and i not in seen]
        report.removed = collection.remove(gone) if gone else 0
    collection.persist()
    report.seconds = time.perf_counter() - started
    return report


def build_items(
    encoder: ImageEncoder,
    items: list[CatalogueItem],
    known: dict[str, tuple[str, str, str, str]],
    catalogue_key: str,
    *,
    batch_size: int = 32,
    progress: bool = True,
    stored: Callable[[str], tuple[np.ndarray, np.ndarray | None] | None] | None = None,
    embed: Embedder | None = None,
) -> Iterator[tuple[list[NewItem], list[tuple[str, str]], list[tuple[str, str, str]], int]]:
    """The item builder: embed catalogue items batch by batch into :class:`NewItem` rows (vector,
    colour, content hash, labels, stamp). ``stored(hash)`` gives vectors already held for the same
    bytes, which skip the encoder. Per batch, yields (new items, (id, stamp) of known items whose
    content did not change, (id, source, reason) of items that could not be read, how many items
    took stored vectors)."""
    by_id = {item.id: item for item in items}
    stream = (embed or local_embedder())(encoder, items, batch_size=batch_size, progress=progress, stored=stored)
    for batch in stream:
        failures = [(key, by_id[key].source, reason) for key, reason in batch.failures]
        fresh, same_content = [], []
        for i, key in enumerate(batch.keys):
            item = by_id[key]
            old = known.get(key)
            if old is not None and old[1] == batch.hashes[i] and old[2] == item.source:
                same_content.append((key, item.stamp))
                continue
            fresh.append(
                NewItem(
                    id=key,
                    source=item.source,
                    hash=batch.hashes[i],
                    vector=batch.vectors[i],
                    colour=None if batch.colours is None else batch.colours[i],
                    metadata=item.metadata,
                    stamp=item.stamp,
                    catalogue=catalogue_key,
                    encoder_version=encoder.version,
                )
            )
        yield fresh, same_content, failures, len(batch.reused)


def _relabel(collection: Collection, pairs: list[tuple[str, dict]]) -> int:
    """Update metadata of unchanged images whose labels changed in the catalogue's CSV."""
    current = {it.id: it.metadata for it in collection.iter_items()}
    changed = [(i, m) for i, m in pairs if current.get(i) != m]
    if changed:
        collection.update_metadata(changed)
    return len(changed)

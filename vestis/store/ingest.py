"""Incremental indexing of a catalogue into a collection (what ``vestis index`` runs).

Only new or changed images are embedded (by change stamp, then content hash); items that left
the catalogue are removed; each batch is committed on its own, so a killed run loses at most the
batches in flight (being embedded or written) and re-running finishes the job. Unreadable images
are reported and skipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from vestis.data.base import Catalogue, CatalogueItem
from vestis.encoders import get_encoder
from vestis.encoders.base import ImageEncoder
from vestis.encoders.colour import COLOUR_DIM, COLOUR_VERSION
from vestis.encoders.pipeline import embed_items
from vestis.errors import VestisError
from vestis.store.collection import Collection, NewItem

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    relabelled: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (id, source, reason)
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
            "failed": [{"id": i, "source": s, "reason": r} for i, s, r in self.failures],
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
        }


def open_collection_encoder(collection: Collection, threads: int | None = None) -> ImageEncoder:
    """The encoder ``collection`` was built with (a built-in, or the ONNX model file it recorded),
    checked against the recorded version."""
    try:
        encoder = get_encoder(collection.encoder_source, threads=threads)
    except VestisError as error:
        raise VestisError(f"cannot open the encoder of collection {collection.path}: {error}. Put the model "
                          "back, or index the catalogue into a new collection with another --encoder") from None
    collection.check_encoder(encoder.version)
    return encoder


def open_or_create(path: Path, encoder: ImageEncoder, index_spec: str | None) -> Collection:
    """Open the collection at ``path`` (checking the encoder) or create it for ``encoder``."""
    if Collection.exists(path):
        collection = Collection.open(path)
        collection.check_encoder(encoder.version)
        if index_spec and index_spec != collection.index_spec:
            collection.set_index_spec(index_spec)
        return collection
    return Collection.create(
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
    workers: int | None = None,
) -> IngestReport:
    """Bring ``collection`` in line with ``catalogue``; see the module docstring. ``workers``:
    threads decoding images (default: one per core, see :func:`vestis.encoders.pipeline.embed_items`)."""
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

    stream = embed_items(
        encoder,
        ((item.id, item.read) for item in todo.values()),
        batch_size=batch_size,
        with_colour=True,
        progress=progress,
        total=len(todo),
        workers=workers,
    )
    for batch in stream:
        for key, reason in batch.failures:
            item = todo[key]
            log.warning("skipped %s (%s): %s", item.id, item.source, reason)
            report.failures.append((item.id, item.source, reason))
        fresh, same_content = [], []
        for i, key in enumerate(batch.keys):
            item = todo[key]
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
                )
            )
            if old is None:
                report.added += 1
            else:
                report.updated += 1
        report.embedded += len(batch.keys)
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


def _relabel(collection: Collection, pairs: list[tuple[str, dict]]) -> int:
    """Update metadata of unchanged images whose labels changed in the catalogue's CSV."""
    current = {it.id: it.metadata for it in collection.iter_items()}
    changed = [(i, m) for i, m in pairs if current.get(i) != m]
    if changed:
        collection.update_metadata(changed)
    return len(changed)

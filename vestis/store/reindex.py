"""Re-embedding a collection without downtime (``vestis reindex``), in any store.

Every item's image is embedded by the new encoder into the store's staging area
(:mod:`vestis.store.reindex_stage`, or a new Milvus collection beside the one in use) while
searches keep answering from the vectors in use; then the store switches to the new vectors in one
atomic step. Items added while it runs are embedded before the switch (the switch refuses while any
item lacks a new vector, and the loop embeds those); removed ones are left out. A kill at any moment
leaves the old state searchable, and a re-run embeds only what is not staged yet. One re-embedding
(or indexing) at a time: the collection's indexing lock is held throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vestis.data.sources import read_source
from vestis.encoders import get_encoder
from vestis.encoders.base import ImageEncoder
from vestis.encoders.pipeline import Transform, embed_items
from vestis.errors import VestisError
from vestis.store.guards import disk_full_errors, indexing_lock
from vestis.store.protocol import CollectionStore
from vestis.store.reindex_stage import EncoderSettings, ReindexStage

Progress = Callable[[int, int], None]
MAX_ROUNDS = 20  # catch-up rounds for items added while embedding, before giving up (the staged ones are kept)
SHOWN_FAILURES = 5


class ReindexError(VestisError):
    """A re-embedding that cannot switch (unreadable images, the encoder already in use)."""


@dataclass
class ReindexReport:
    previous: str
    encoder: str
    items: int = 0
    embedded: int = 0
    resumed: int = 0  # items whose new vector an earlier, interrupted run had staged
    rounds: int = 0
    kept_old: bool = False
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"previous_encoder": self.previous, "encoder": self.encoder, "items": self.items,
                "embedded": self.embedded, "resumed": self.resumed, "rounds": self.rounds,
                "kept_old": self.kept_old, "seconds": round(self.seconds, 3)}


def reindex(collection: CollectionStore, encoder: ImageEncoder, *, keep_old: bool = False, batch_size: int = 32,
            progress: bool = True, transform: Transform | None = None, rollback: bool = False,
            on_progress: Progress | None = None) -> ReindexReport:
    """Re-embed every item of ``collection`` with ``encoder`` and switch to it (see the module
    docstring). ``transform`` is the collection's crop (``vestis index --crop``); ``rollback``
    stages the vectors ``keep_old`` kept, so only items added since are embedded;
    ``on_progress(items with a new vector, items)`` is called after each batch."""
    started = time.perf_counter()
    advice = "run the same command again: it resumes, and the collection keeps answering from its old vectors"
    with indexing_lock(collection.path, wait=False), disk_full_errors(collection.path, advice):
        collection.refresh()
        if encoder.version == collection.encoder_version:
            raise ReindexError(f"{collection.location} is already embedded by {encoder.name!r} (version "
                               f"{encoder.version}): nothing to re-embed")
        report = ReindexReport(previous=collection.encoder_version, encoder=encoder.version, kept_old=keep_old)
        stage = collection.stage_reindex(EncoderSettings.of(encoder), from_previous=rollback)
        report.resumed = stage.staged()
        while not _embed_missing(stage, encoder, report, batch_size, progress and report.rounds == 0, transform,
                                 on_progress) or not stage.switch(keep_old):
            if report.rounds >= MAX_ROUNDS:
                raise ReindexError(f"items kept arriving during {MAX_ROUNDS} rounds of catching up; {advice}")
        collection.refresh()
        report.items = len(collection)
        collection.persist()
    report.seconds = time.perf_counter() - started
    return report


def rollback(collection: CollectionStore, *, keep_old: bool = False, batch_size: int = 32, progress: bool = True,
             transform: Transform | None = None, threads: int | None = None,
             on_progress: Progress | None = None) -> ReindexReport:
    """Switch back to the vectors ``vestis reindex --keep-old`` kept (items added since are
    embedded by the old encoder)."""
    previous = collection.previous_encoder()
    if previous is None:
        raise ReindexError(f"{collection.location} kept no earlier vectors to roll back to (a reindex with "
                           "--keep-old keeps them)")
    encoder = get_encoder(previous.source, threads=threads)
    if encoder.version != previous.version:
        raise ReindexError(f"the earlier encoder {previous.source!r} now has version {encoder.version}, not "
                           f"{previous.version}: its kept vectors cannot be mixed with new ones")
    return reindex(collection, encoder, keep_old=keep_old, batch_size=batch_size, progress=progress,
                   transform=transform, rollback=True, on_progress=on_progress)


def _embed_missing(stage: ReindexStage, encoder: ImageEncoder, report: ReindexReport, batch_size: int, progress: bool,
                   transform: Transform | None, on_progress: Progress | None) -> bool:
    """Embed the items without a new vector into ``stage``; True when there were none (nothing to
    wait for before switching). Unreadable or changed images stop the run with their names."""
    report.rounds += 1
    todo = stage.missing()
    if not todo:
        return True
    by_vid = {it.vid: it for it in todo}
    reads = ((it.vid, lambda source=it.source: read_source(source)) for it in todo)
    done = 0
    for batch in embed_items(encoder, reads, batch_size=batch_size, with_colour=False, progress=progress,
                             total=len(todo), transform=transform):
        done += len(batch.keys) + len(batch.failures)
        report.failures += [(by_vid[v].id, by_vid[v].source, reason) for v, reason in batch.failures]
        ok = []
        for i, vid in enumerate(batch.keys):
            if batch.hashes[i] == by_vid[vid].hash:
                ok.append(i)
            else:  # its vector would not be of the content the collection records
                report.failures.append((by_vid[vid].id, by_vid[vid].source, "its image changed since it was indexed"))
        if ok:
            stage.add([by_vid[batch.keys[i]] for i in ok], np.asarray(batch.vectors)[ok])
            report.embedded += len(ok)
        if on_progress is not None:
            on_progress(report.resumed + report.embedded, report.resumed + report.embedded + len(todo) - done)
    if report.failures:
        shown = "; ".join(f"{i} ({s}): {r}" for i, s, r in report.failures[:SHOWN_FAILURES])
        more = len(report.failures) - SHOWN_FAILURES
        raise ReindexError(f"{len(report.failures)} item(s) could not be re-embedded, so the collection stays on "
                           f"its old vectors: {shown}{f' and {more} more' if more > 0 else ''}. Index them "
                           "again (`vestis index`) or remove them (`vestis remove`), then run the same "
                           "command again: what was embedded is kept")
    return False

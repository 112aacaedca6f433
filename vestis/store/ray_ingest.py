"""Embedding a catalogue on a Ray cluster (``vestis index SOURCE --ray auto|ADDRESS``).

The driver plans the work exactly as the single-process path does (only new or changed items,
by change stamp; see :mod:`vestis.store.ingest`), then hands the items to Ray Data:
``map_batches`` over a pool of actors, each of which opens the collection's encoder once and
reads, decodes, embeds and describes the colour of its batches with the very code of the single-
process path (:func:`vestis.encoders.pipeline.embed_items`), so items and vectors are the same.
Results stream back to the driver, which commits them batch by batch through the same atomic
writes: killing the driver loses nothing committed, and a re-run embeds only what is missing.

Workers read items by their source URI (a file path, a zip member), so on a cluster of several
machines the catalogue must be at the same path on every node (a shared mount). An encoder given
as an ``.onnx`` path must be there too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from vestis.data.base import CatalogueItem
from vestis.data.sources import read_source
from vestis.encoders.base import ImageEncoder
from vestis.encoders.colour import COLOUR_DIM
from vestis.encoders.pipeline import EmbeddedBatch, StoredLookup
from vestis.errors import VestisError

log = logging.getLogger(__name__)
BLOCK_BATCHES = 4  # inference batches per Ray Data block


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is a separate import
    except ImportError:
        raise VestisError("--ray needs Ray: pip install 'vestis[ray]'") from None
    return ray


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (``auto``: the one this machine belongs to, else a new
    local one with every core). Nothing is done when this process is already connected."""
    ray = _ray()
    if ray.is_initialized():
        return
    try:
        if address in (None, "", "auto"):
            ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise VestisError(f"cannot join the Ray cluster at {address}: {e}") from None


class EmbedActor:
    """One Ray actor: the encoder loaded once, then batches embedded as in the single-process path."""

    def __init__(self, encoder_source: str, encoder_version: str, threads: int) -> None:
        from vestis.encoders import get_encoder

        self.encoder = get_encoder(encoder_source, threads=threads)
        if self.encoder.version != encoder_version:
            raise VestisError(f"the encoder {encoder_source} on this Ray node is version {self.encoder.version}, "
                              f"not {encoder_version}")
        self.threads = threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from vestis.encoders.pipeline import embed_items

        keys, sources = [str(k) for k in batch["key"]], [str(s) for s in batch["source"]]
        (done,) = embed_items(self.encoder, ((i, lambda s=sources[i]: read_source(s)) for i in range(len(keys))),
                              batch_size=max(1, len(keys)), with_colour=True, workers=self.threads,
                              progress=False)
        n = len(keys)
        vectors = np.zeros((n, self.encoder.dim), np.float32)
        colours = np.zeros((n, COLOUR_DIM), np.float32)
        hashes, errors = [""] * n, [""] * n
        for row, i in enumerate(done.keys):
            vectors[i], colours[i], hashes[i] = done.vectors[row], done.colours[row], done.hashes[row]
        for i, reason in done.failures:
            errors[i] = reason
        # plain string arrays become Arrow string columns; object arrays would be pickled per block
        return {"key": np.array(keys, dtype=str), "hash": np.array(hashes, dtype=str),
                "error": np.array(errors, dtype=str), "vector": vectors, "colour": colours}


@dataclass
class RayEmbedder:
    """An :class:`~vestis.store.ingest.Embedder` that runs on a Ray cluster.

    ``address``: ``auto`` or a cluster address (see :func:`connect`); ``actors``: encoder actors
    (default: one per CPU of the cluster, ``cpus_per_actor`` each); ``threads`` per actor for
    decoding and inference (default: ``cpus_per_actor``)."""

    address: str | None = "auto"
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        # Join (or start) the cluster now, before a store is opened: a local cluster's daemons must
        # not be started while Milvus Lite's in-process gRPC server runs threads in this process.
        connect(self.address)

    def __call__(self, encoder: ImageEncoder, items: list[CatalogueItem], *, batch_size: int, progress: bool,
                 stored: StoredLookup | None = None) -> Iterator[EmbeddedBatch[str]]:
        """``stored`` is not consulted: the driver does not read the images, so every item sent to
        the cluster is embedded there."""
        if not items:
            return
        ray = _ray()
        cpus = ray.cluster_resources().get("CPU", 1.0)
        blocks = -(-len(items) // (BLOCK_BATCHES * batch_size))
        actors = min(self.actors or max(1, int(cpus // self.cpus_per_actor)), blocks)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # one bar, the driver's, counts committed images
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Blocks of a few batches: results reach the driver (and are committed) soon after they are
        # embedded, and a killed driver loses little in-flight work.
        dataset = ray.data.from_items([{"key": it.id, "source": it.source} for it in items],
                                      override_num_blocks=blocks)
        embedded = dataset.map_batches(
            EmbedActor,
            fn_constructor_kwargs={"encoder_source": encoder.source, "encoder_version": encoder.version,
                                   "threads": max(1, int(self.cpus_per_actor))},
            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor or None,
        )
        bar = tqdm(total=len(items), unit="img", desc=f"embedding on Ray ({actors} actors, {encoder.name})",
                   disable=None if progress else True)
        try:
            # blocks as the actors made them (no re-batching on the driver): each is committed at once
            for batch in embedded.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
                ok = batch["error"] == ""
                keys = [str(k) for k in batch["key"]]
                bar.update(len(keys))
                yield EmbeddedBatch(
                    keys=[k for k, good in zip(keys, ok) if good],
                    vectors=np.asarray(batch["vector"][ok], np.float32),
                    colours=np.asarray(batch["colour"][ok], np.float32),
                    hashes=[str(h) for h, good in zip(batch["hash"], ok) if good],
                    failures=[(k, str(e)) for k, e, good in zip(keys, batch["error"], ok) if not good],
                )
        finally:
            bar.close()


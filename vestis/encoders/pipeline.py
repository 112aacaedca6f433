"""Batched embedding of many items: decode, preprocess and colour in threads, infer in batches.

Three stages run at once: reading, hashing, decoding, preprocessing and the colour descriptor of
the next batches in a thread pool (Pillow, hashlib and NumPy release the GIL); onnxruntime
embedding the current batch in an inference thread; and the caller handling the previous batch.
Batches come out in input order. An item that cannot be read or decoded is reported in its
batch's ``failures`` and never stops the run. An item whose bytes (by sha256) already have vectors,
as ``stored`` answers, is neither decoded nor embedded: the vectors depend on the bytes alone.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

from vestis.data.images import decode_image
from vestis.encoders.base import ImageEncoder
from vestis.encoders.colour import COLOUR_DIM, colour_descriptor
from vestis.errors import VestisError

K = TypeVar("K")
PREFETCH = 2  # batches being prepared ahead of the one being embedded
AHEAD = 1  # embedded batches waiting for the caller
Vectors = tuple[np.ndarray, np.ndarray | None]  # deep vector, colour descriptor
StoredLookup = Callable[[str], Vectors | None]
Transform = Callable[[Image.Image], Image.Image]  # applied to each decoded image before it is embedded


@dataclass
class EmbeddedBatch(Generic[K]):
    """The embedded items of one input batch, in input order; ``vectors``, ``colours`` and
    ``hashes`` (sha256 hex of the encoded bytes) are row-aligned with ``keys``. ``failures`` holds
    the batch's items that could not be read or decoded, with the reason; ``reused`` the keys whose
    vectors came from the ``stored`` lookup instead of the encoder."""

    keys: list[K]
    vectors: np.ndarray
    colours: np.ndarray | None
    hashes: list[str]
    failures: list[tuple[K, str]]
    reused: set[K] = field(default_factory=set)


@dataclass
class _Prepared(Generic[K]):
    key: K
    tensor: np.ndarray | None = None
    colour: np.ndarray | None = None
    digest: str = ""
    error: str = ""
    stored: Vectors | None = None


def _prepare(encoder: ImageEncoder, key: K, read: Callable[[], bytes], with_colour: bool,
             stored: StoredLookup | None, transform: Transform | None = None) -> _Prepared[K]:
    try:
        data = read()
        digest = hashlib.sha256(data).hexdigest()
        found = stored(digest) if stored is not None else None
        if found is not None and (found[1] is not None or not with_colour):
            return _Prepared(key, digest=digest, stored=found)
        image = decode_image(data, source=str(key))
        if transform is not None:
            image = transform(image)
        return _Prepared(key, encoder.preprocess(image), colour_descriptor(image) if with_colour else None, digest)
    except VestisError as e:
        return _Prepared(key, error=str(e))
    except Exception as e:  # noqa: BLE001 - a reader's own failure (I/O, zip, network) skips one item only
        return _Prepared(key, error=f"cannot read: {type(e).__name__}: {e}")


def embed_items(encoder: ImageEncoder, items: Iterable[tuple[K, Callable[[], bytes]]], *, batch_size: int = 32,
                with_colour: bool = True, workers: int | None = None, progress: bool = True,
                total: int | None = None, stored: StoredLookup | None = None,
                transform: Transform | None = None) -> Iterator[EmbeddedBatch[K]]:
    """Embed ``(key, read)`` items, yielding one :class:`EmbeddedBatch` per ``batch_size`` inputs.

    ``workers`` threads (default: one per core) prepare images; ``progress`` shows a tqdm bar with
    images/s on a terminal; ``total`` (the number of items, when known) gives the bar an end;
    ``stored`` maps a sha256 to vectors already computed for those bytes (or None), whose items
    skip decoding and the encoder. It is called from the worker threads, and so is ``transform``,
    which changes each decoded image before it is embedded (a crop to a garment region). Inference runs in a thread
    of its own, one batch ahead of the caller, so what the caller does with a batch (writing it to a
    collection) overlaps the embedding of the next one; ``items`` is iterated in that thread.
    """
    if batch_size < 1:
        raise VestisError(f"batch_size must be at least 1, got {batch_size}")
    source = iter(items)
    from tqdm import tqdm  # imported here: a single query never shows a bar

    bar = tqdm(total=total, unit="img", desc=f"embedding ({encoder.name})", disable=None if progress else True)
    pool = ThreadPoolExecutor(workers or os.cpu_count() or 1, thread_name_prefix="vestis-embed")
    pending: deque[list[Future[_Prepared[K]]]] = deque()

    def submit_next() -> None:
        chunk = list(islice(source, batch_size))
        if chunk:
            pending.append([pool.submit(_prepare, encoder, key, read, with_colour, stored, transform) for key, read in chunk])

    ready: queue.Queue[EmbeddedBatch[K] | BaseException | None] = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()

    def hand_over(result: EmbeddedBatch[K] | BaseException | None) -> None:
        while not stop.is_set():
            try:
                ready.put(result, timeout=0.1)
                return
            except queue.Full:
                continue

    def infer() -> None:
        try:
            for _ in range(PREFETCH):
                submit_next()
            while pending and not stop.is_set():
                prepared = [f.result() for f in pending.popleft()]
                submit_next()
                hand_over(_embed(encoder, prepared, with_colour))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            hand_over(error)
        else:
            hand_over(None)

    thread = threading.Thread(target=infer, name="vestis-infer", daemon=True)
    thread.start()
    try:
        while (batch := ready.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            bar.update(len(batch.keys) + len(batch.failures))
            yield batch
    finally:
        stop.set()
        thread.join()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _embed(encoder: ImageEncoder, prepared: list[_Prepared[K]], with_colour: bool) -> EmbeddedBatch[K]:
    """One batch's vectors: the encoder's for fresh items, the stored ones for the others."""
    fresh = [p for p in prepared if not p.error and p.stored is None]
    if fresh:
        for p, vector in zip(fresh, encoder.embed_batch(np.stack([p.tensor for p in fresh])), strict=True):
            p.stored = (vector, p.colour)
    done = [p for p in prepared if not p.error]
    vectors = np.stack([p.stored[0] for p in done]) if done else np.zeros((0, encoder.dim), np.float32)
    colours = None
    if with_colour:
        colours = np.stack([p.stored[1] for p in done]) if done else np.zeros((0, COLOUR_DIM), np.float32)
    return EmbeddedBatch([p.key for p in done], vectors, colours, [p.digest for p in done],
                         [(p.key, p.error) for p in prepared if p.error],
                         {p.key for p in done if p.tensor is None})

"""Continuous batching: concurrent single-image requests share one encoder run.

A server answering many clients embeds one image per request; on encoders that are faster per
image on a batch, requests that arrive together are worth running together. :class:`MicroBatcher`
takes items from any number of threads, and one worker thread runs ``fn`` on a batch: whenever it
is free it takes the first waiting item and whatever else is queued behind it (up to ``max_batch``)
and runs them at once. There is no wait timer: a lone request runs as soon as it arrives, and the
requests that arrive while a batch runs form the next one, so batches grow with the load alone.

``fn`` maps a list of items to a list of results of the same length, in order; an exception it
raises is given to every request of that batch. :class:`BatchingEncoder` puts a batcher in front
of an :class:`~vestis.encoders.base.ImageEncoder`, so code that embeds one image at a time (a
server's request handlers) shares encoder runs without knowing it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

from vestis.encoders.base import ImageEncoder
from vestis.errors import VestisError
from vestis.locks import leaf_lock

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


@dataclass
class BatchStats:
    """Counts of what the batcher ran: batches, items, and batches by size."""

    batches: int = 0
    items: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.sizes[size] = self.sizes.get(size, 0) + 1


class MicroBatcher(Generic[T, R]):
    """Runs ``fn`` on batches of items submitted one by one from many threads (module docstring).
    ``close()`` (or leaving a ``with`` block) answers what is queued and stops the worker.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_batch: int = 8,
                 name: str = "vestis-batcher") -> None:
        if max_batch < 1:
            raise VestisError(f"max_batch must be at least 1 (got {max_batch})")
        self.fn, self.max_batch = fn, max_batch
        self.stats = BatchStats()
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._lock = leaf_lock(name)
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def submit(self, item: T) -> Future:
        """Queue one item; the future gives its result (or the batch's exception)."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise VestisError("the batcher is closed")
            self._queue.put((item, future))
        return future

    def __call__(self, item: T) -> R:
        """Submit one item and wait for its result."""
        return self.submit(item).result()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._worker.join()

    def __enter__(self) -> MicroBatcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _collect(self, first: tuple[T, Future]) -> tuple[list[tuple[T, Future]], bool]:
        """The batch of ``first`` and what is queued behind it, and whether the stop marker was seen."""
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                return batch, True
            batch.append(entry)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stop = self._collect(first)
            live = [(item, f) for item, f in batch if f.set_running_or_notify_cancel()]  # drop cancelled
            if not live:
                continue
            items, futures = [item for item, _ in live], [f for _, f in live]
            self.stats.record(len(items))
            try:
                results = self.fn(items)
                if len(results) != len(items):
                    raise VestisError(f"batch function returned {len(results)} results for {len(items)} items")
            except BaseException as error:  # noqa: BLE001 - every request of the batch learns why it failed
                for f in futures:
                    f.set_exception(error)
                continue
            for f, result in zip(futures, results, strict=True):
                f.set_result(result)


def batched_embedder(embed_batch: Callable[[np.ndarray], np.ndarray], **options: object
                     ) -> MicroBatcher[np.ndarray, np.ndarray]:
    """A batcher of preprocessed images (C x H x W float32 each) to their embeddings, one encoder
    run per batch: ``embed_batch`` gets the stacked N x C x H x W batch (``ImageEncoder.embed_batch``)."""
    return MicroBatcher(lambda images: list(embed_batch(np.stack(images))), **options)


class BatchingEncoder(ImageEncoder):
    """``inner`` with its one-image ``embed_batch`` calls, from any number of threads, run together
    in batches (:class:`MicroBatcher`); larger batches and everything else go straight to ``inner``.
    Embeddings are those of ``inner`` (same name, version and dimension)."""

    def __init__(self, inner: ImageEncoder, *, max_batch: int = 8) -> None:
        self.inner = inner
        self.name, self.version, self.source = inner.name, inner.version, inner.source
        self.input_size, self.dim = inner.input_size, inner.dim
        self.batcher = batched_embedder(inner.embed_batch, max_batch=max_batch, name=f"vestis-batcher-{inner.name}")

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.inner.preprocess(image)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 1:
            return self.batcher(batch[0])[None]
        return self.inner.embed_batch(batch)

    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        return self.inner.feature_maps(batch)

    def close(self) -> None:
        """Answer the queued requests and stop the batcher's thread."""
        self.batcher.close()

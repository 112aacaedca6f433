"""MicroBatcher: continuous batching. A lone request runs at once (no wait timer); requests that
queue while a batch runs share the next one; results equal one-at-a-time embedding; batch sizes
and errors are handled. Nothing is timed: events that hold the worker decide what shares a batch."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.conftest import garment_image, jpeg_bytes
from vestis.data.images import decode_image
from vestis.encoders import get_encoder
from vestis.encoders.batching import BatchingEncoder, MicroBatcher
from vestis.errors import VestisError

GUARD = 120  # seconds before a hung test fails instead of hanging the suite


class HeldWorker:
    """A batch function that records batches and blocks the first one until ``release``; ``fn``
    answers them (default: each item times ten)."""

    def __init__(self, fn=lambda items: [x * 10 for x in items]):
        self.fn = fn
        self.batches: list[list] = []
        self.entered, self.released = threading.Event(), threading.Event()

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.entered.set()
        assert self.released.wait(GUARD)
        return self.fn(items)


@pytest.mark.slow
def test_concurrent_requests_get_the_vectors_of_one_at_a_time_embedding(tmp_path):
    encoder = get_encoder(cache_dir=tmp_path / "encoder-cache")
    colours = [(200, 30, 30), (30, 30, 200), (30, 160, 60), (240, 200, 40), (20, 20, 20), (150, 60, 160)]
    images = [decode_image(jpeg_bytes(garment_image(colours[i % 6], ("shirt", "dress", "trousers")[i % 3], seed=i)))
              for i in range(12)]
    inputs = [encoder.preprocess(im) for im in images]
    alone = np.stack([encoder.embed_batch(x[None])[0] for x in inputs])
    held = HeldWorker(lambda items: list(encoder.embed_batch(np.stack(items))))
    with MicroBatcher(held, max_batch=4) as batcher:
        first = batcher.submit(inputs[0])
        assert held.entered.wait(GUARD)  # the first request runs alone; the other 11 queue behind it
        futures = [batcher.submit(x) for x in inputs[1:]]
        held.released.set()
        together = np.stack([f.result(GUARD) for f in [first, *futures]])
    assert batcher.stats.sizes == {1: 1, 4: 2, 3: 1}  # 11 queued requests: three encoder runs, not eleven
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert (np.argmax(together @ alone.T, axis=1) == np.arange(12)).all()

    wrapped = BatchingEncoder(encoder, max_batch=4)
    assert (wrapped.name, wrapped.version, wrapped.dim) == (encoder.name, encoder.version, encoder.dim)
    with ThreadPoolExecutor(8) as pool:  # one image per call, as request handlers embed
        one_each = np.stack(list(pool.map(lambda im: wrapped.embed_images([im])[0], images[:8])))
    assert sum(wrapped.batcher.stats.sizes.values()) == wrapped.batcher.stats.batches <= 8
    np.testing.assert_allclose(one_each, alone[:8], atol=1e-5)
    np.testing.assert_allclose(wrapped.embed_images(images[:3]), alone[:3], atol=1e-5)  # straight through
    assert wrapped.batcher.stats.items == 8
    wrapped.close()


def test_a_lone_request_runs_at_once_without_waiting_for_company():
    seen: list[list[int]] = []
    with MicroBatcher(lambda items: seen.append(list(items)) or [x + 1 for x in items], max_batch=8) as batcher:
        assert batcher.submit(41).result(GUARD) == 42  # nothing else ever arrives: no timer has to run out
        assert batcher(1) == 2
    assert seen == [[41], [1]] and batcher.stats.sizes == {1: 2}


def test_requests_queued_during_a_run_share_the_next_batch_up_to_max_batch():
    held = HeldWorker()
    with MicroBatcher(held, max_batch=8) as batcher:
        first = batcher.submit(0)
        assert held.entered.wait(GUARD)
        queued = [batcher.submit(i) for i in range(1, 11)]
        held.released.set()
        assert [f.result(GUARD) for f in [first, *queued]] == [i * 10 for i in range(11)]
    assert held.batches == [[0], list(range(1, 9)), [9, 10]]
    assert batcher.stats.batches == 3 and batcher.stats.items == 11


def test_a_failing_batch_fails_its_requests_only():
    def fn(items):
        if "bad" in items:
            raise ValueError("cannot embed this batch")
        return [s.upper() for s in items]

    held = HeldWorker()
    with MicroBatcher(lambda items: held(items) if items == ["hold"] else fn(items), max_batch=4) as batcher:
        hold = batcher.submit("hold")
        assert held.entered.wait(GUARD)
        doomed = [batcher.submit("ok"), batcher.submit("bad")]
        held.released.set()
        hold.result(GUARD)
        for f in doomed:
            with pytest.raises(ValueError, match="cannot embed"):
                f.result(GUARD)
        assert batcher("fine") == "FINE"


def test_close_answers_queued_requests_then_refuses_new_ones():
    held = HeldWorker()
    batcher = MicroBatcher(held, max_batch=2)
    first = batcher.submit(1)
    assert held.entered.wait(GUARD)
    rest = [batcher.submit(i) for i in (2, 3, 4)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    held.released.set()
    closer.join(GUARD)
    assert [f.result(0) for f in [first, *rest]] == [10, 20, 30, 40]
    with pytest.raises(VestisError, match="closed"):
        batcher.submit(5)


def test_bad_settings_are_refused():
    with pytest.raises(VestisError, match="max_batch"):
        MicroBatcher(lambda items: items, max_batch=0)

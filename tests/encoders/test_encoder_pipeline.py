"""embed_items: batches in input order, corrupt items reported and skipped, colours and hashes."""

import hashlib

import numpy as np
import pytest
from tests.conftest import garment_image, jpeg_bytes

from vestis.data.images import decode_image
from vestis.encoders import get_encoder
from vestis.encoders.colour import COLOUR_DIM, colour_descriptor
from vestis.encoders.pipeline import embed_items
from vestis.errors import VestisError

pytestmark = pytest.mark.slow  # exports the default encoder once per session (a few seconds)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return get_encoder(cache_dir=tmp_path_factory.getbasetemp() / "encoder-cache")


def unreadable() -> bytes:
    raise OSError("disk went away")


@pytest.fixture(scope="module")
def catalogue():
    colours = [(200, 30, 30), (30, 30, 200), (30, 160, 60), (240, 200, 40), (20, 20, 20), (150, 60, 160)]
    good = {f"item-{i}": jpeg_bytes(garment_image(c, ("shirt", "dress", "trousers")[i % 3], seed=i))
            for i, c in enumerate(colours)}
    items = [(k, (lambda b=b: b)) for k, b in good.items()]
    items.insert(2, ("corrupt", lambda: b"\xff\xd8\xff\xe0 not really a jpeg"))
    items.insert(5, ("unreadable", unreadable))
    return good, items


def test_order_failures_vectors_colours_hashes(encoder, catalogue):
    good, items = catalogue
    batches = list(embed_items(encoder, iter(items), batch_size=3, progress=False, workers=2))
    assert len(batches) == 3  # 8 inputs in batches of 3
    assert [k for b in batches for k in b.keys] == list(good)  # input order, failures left out
    failures = dict(f for b in batches for f in b.failures)
    assert set(failures) == {"corrupt", "unreadable"}
    assert "corrupt" in failures["corrupt"] and "disk went away" in failures["unreadable"]
    vectors = np.concatenate([b.vectors for b in batches])
    images = [decode_image(b) for b in good.values()]
    assert np.allclose(vectors, encoder.embed_images(images), atol=1e-5)
    colours = np.concatenate([b.colours for b in batches])
    assert colours.shape == (len(good), COLOUR_DIM)
    assert np.allclose(colours, np.stack([colour_descriptor(im) for im in images]), atol=1e-6)
    assert [h for b in batches for h in b.hashes] == [hashlib.sha256(b).hexdigest() for b in good.values()]


def test_all_failed_batch_and_no_colours(encoder, catalogue):
    _, items = catalogue
    bad = [("a", lambda: b""), ("b", unreadable)]
    batches = list(embed_items(encoder, bad + items[:1], batch_size=2, with_colour=False, progress=False))
    assert batches[0].keys == [] and batches[0].vectors.shape == (0, encoder.dim)
    assert [k for k, _ in batches[0].failures] == ["a", "b"]
    assert batches[1].keys == ["item-0"] and batches[1].colours is None
    assert list(embed_items(encoder, [], progress=False)) == []


def test_bad_batch_size(encoder):
    with pytest.raises(VestisError, match="batch_size"):
        next(embed_items(encoder, [], batch_size=0))


def test_a_failing_source_reaches_the_caller_and_stopping_early_ends_the_inference_thread(encoder, catalogue):
    import threading

    good, items = catalogue

    def broken_listing():
        yield from items[:3]
        raise OSError("catalogue listing failed")

    stream = embed_items(encoder, broken_listing(), batch_size=2, progress=False)
    with pytest.raises(OSError, match="listing failed"):
        list(stream)
    stream = embed_items(encoder, iter(items), batch_size=2, progress=False)
    first = next(stream)
    assert first.keys == ["item-0", "item-1"]
    stream.close()  # the caller stops after one batch (e.g. its write failed)
    assert not [t for t in threading.enumerate() if t.name == "vestis-infer"]


def test_stored_vectors_skip_decoding_and_the_encoder(encoder, catalogue, monkeypatch):
    """Items whose bytes the lookup knows keep their place in the batch with the stored vectors; the
    others are embedded as usual, and a stored entry without colour is embedded when colour is wanted."""
    good, items = catalogue
    known = {hashlib.sha256(good["item-1"]).hexdigest(): (np.full(encoder.dim, 0.5, np.float32),
                                                          np.full(COLOUR_DIM, 0.25, np.float32)),
             hashlib.sha256(good["item-3"]).hexdigest(): (np.zeros(encoder.dim, np.float32), None)}
    embedded = []
    real = encoder.embed_batch
    monkeypatch.setattr(encoder, "embed_batch", lambda tensors: embedded.append(len(tensors)) or real(tensors))
    batches = list(embed_items(encoder, items, batch_size=4, progress=False, stored=known.get))
    assert [k for b in batches for k in b.keys] == list(good)
    assert set().union(*(b.reused for b in batches)) == {"item-1"}
    assert sum(embedded) == len(good) - 1
    vectors = {k: v for b in batches for k, v in zip(b.keys, b.vectors)}
    colours = {k: c for b in batches for k, c in zip(b.keys, b.colours)}
    assert np.all(vectors["item-1"] == 0.5) and np.all(colours["item-1"] == 0.25)
    expected = encoder.embed_images([decode_image(good["item-3"])])[0]
    assert np.allclose(vectors["item-3"], expected, atol=1e-5)  # no stored colour: embedded

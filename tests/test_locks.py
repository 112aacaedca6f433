"""The lock order of vestis.locks: a collection lock first, then at most one leaf lock; a wrong
order raises at once (in every thread) instead of deadlocking when two threads meet."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vestis.locks import LockOrderError, collection_lock, leaf_lock
from vestis.store.collection import Collection, NewItem


def test_the_documented_order_is_allowed_and_re_entry_is_free():
    coll, leaf = collection_lock("c"), leaf_lock("leaf")
    with coll, coll, leaf:  # the collection lock re-entered, then a leaf
        pass
    with leaf:
        pass
    assert coll.acquire(timeout=0.1)
    coll.release()


@pytest.mark.parametrize("second", ["collection", "leaf"])
def test_a_lock_taken_while_a_leaf_is_held_raises(second):
    leaf = leaf_lock("leaf")
    other = collection_lock("c") if second == "collection" else leaf_lock("other leaf")
    with leaf, pytest.raises(LockOrderError, match="while holding leaf"):
        other.acquire()
    with other:  # nothing was left held by the refused acquire
        pass


def test_two_collection_locks_are_never_nested():
    a, b = collection_lock("a"), collection_lock("b")
    with a, pytest.raises(LockOrderError, match="b .collection lock. taken while holding a"):
        b.acquire()


def test_held_locks_are_per_thread():
    leaf, coll = leaf_lock("leaf"), collection_lock("c")
    errors: list[BaseException] = []
    with leaf:  # another thread holds no leaf, so it may take the collection lock
        t = threading.Thread(target=lambda: _run(coll, errors))
        t.start()
        t.join(timeout=10)
    assert not errors


def _run(lock, errors):
    try:
        with lock:
            pass
    except BaseException as error:  # noqa: BLE001 - reported to the test thread
        errors.append(error)


def test_a_collection_lock_is_the_store_lock_and_ranks_first(tmp_path):
    coll = Collection.create(tmp_path / "c", encoder_name="test", encoder_version="t/1", dim=4, colour_dim=0)
    coll.upsert([NewItem("a", "/a.jpg", "h", np.ones(4, np.float32) / 2, None, {"kind": "shirt"})])
    with leaf_lock("leaf"), pytest.raises(LockOrderError):
        len(coll)  # reading the database takes the collection lock
    with coll.lock:
        assert len(coll) == 1
    coll.close()

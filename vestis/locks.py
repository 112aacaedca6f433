"""The lock order of vestis, written down and checked.

Two ranks of lock exist in one process:

1. ``COLLECTION``: a collection's lock (the local store's SQLite connection lock, which its
   per-item vector stores share; the Milvus store's lock). Reads that must see one generation of
   the collection, and every write, hold it. It is re-entrant.
2. ``LEAF``: the own lock of a structure derived from a collection (the keyword index's BM25
   retriever, the label vocabulary's cache of word vectors, the micro-batching queue of an
   encoder). It guards that structure's memory only: while it is held, no other lock is taken.

A thread takes locks in rank order only: a collection lock, then at most one leaf lock. So a
derived structure that must read the collection to refresh itself does so *before* taking its own
lock (holding the collection lock, which makes the data and its generation agree), never inside
it. :class:`RankedLock` checks the order on every acquire and raises :class:`LockOrderError` on a
violation, so a wrong order fails at once, in tests and in production, instead of deadlocking
when two threads happen to meet. Two collection locks are never nested either (nothing needs to
hold two collections at once).
"""

from __future__ import annotations

import threading
from typing import Literal

COLLECTION, LEAF = 1, 2
_RANK_NAMES = {COLLECTION: "collection", LEAF: "leaf"}
_held = threading.local()  # .locks: the RankedLocks this thread holds, in the order taken


class LockOrderError(RuntimeError):
    """A lock was taken out of the documented order (a programming error, not bad input)."""


def _held_locks() -> list[RankedLock]:
    locks = getattr(_held, "locks", None)
    if locks is None:
        locks = _held.locks = []
    return locks


class RankedLock:
    """A lock with a rank in the lock order (see the module docstring); re-entrant when asked."""

    def __init__(self, name: str, rank: Literal[1, 2], *, reentrant: bool = False) -> None:
        self.name, self.rank = name, rank
        self._lock = threading.RLock() if reentrant else threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        held = _held_locks()
        if self not in held:  # re-entering a lock this thread holds needs no check
            blocking_lock = next((other for other in held if other.rank >= self.rank), None)
            if blocking_lock is not None:
                raise LockOrderError(
                    f"{self.name} ({_RANK_NAMES[self.rank]} lock) taken while holding {blocking_lock.name} "
                    f"({_RANK_NAMES[blocking_lock.rank]} lock): take a collection's lock first, and nothing "
                    "while a leaf lock is held (vestis.locks)")
        if not self._lock.acquire(blocking, timeout):
            return False
        held.append(self)
        return True

    def release(self) -> None:
        held = _held_locks()
        self._lock.release()
        for i in range(len(held) - 1, -1, -1):
            if held[i] is self:
                del held[i]
                break

    def __enter__(self) -> RankedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RankedLock({self.name!r}, {_RANK_NAMES[self.rank]})"


def collection_lock(name: str) -> RankedLock:
    """A collection's re-entrant lock (rank ``COLLECTION``)."""
    return RankedLock(name, COLLECTION, reentrant=True)


def leaf_lock(name: str) -> RankedLock:
    """A derived structure's own lock (rank ``LEAF``): hold it only around that structure's memory."""
    return RankedLock(name, LEAF)

"""Vector rows memory-mapped from disk instead of held in anonymous memory.

An index keeps its float32 vectors only to re-score the ``k * k_factor`` candidates of each query
(and for exact search before a structure is built). Mapped from the saved ``vectors.npy``, those
rows stay in the OS file cache, shared and reclaimable, and only the rows a query touches are
paged in: a million 1280-d vectors cost 5.1 GB of disk, not 5.1 GB of the process's memory.

The mapping is copy-on-write: the saved file is never modified, and an in-place edit (an
overwrite, a swap-remove, a compaction) copies only the pages it touches. Growing past the file
moves the rows into an unlinked temporary file, mapped the same way, rather than into memory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

COPY_ROWS = 1 << 14  # rows copied at once when a mapped array grows


def open_rows(path: Path) -> np.memmap:
    """The 2-D float32 array saved at ``path`` (``.npy``), mapped copy-on-write."""
    return np.load(path, mmap_mode="c")


def is_mapped(array: np.ndarray) -> bool:
    """Whether ``array`` (or the array it views) is memory-mapped from a file."""
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = array.base if isinstance(array.base, np.ndarray) else None
    return False


def grow_rows(rows: np.ndarray, n: int, capacity: int) -> np.memmap:
    """A writable mapped array of ``capacity`` rows whose first ``n`` are ``rows[:n]``, backed by an
    unlinked temporary file (removed by the OS when the array is freed); copied in chunks so the
    old rows are never all in memory at once."""
    dim = rows.shape[1]
    with tempfile.TemporaryFile(prefix="vestis-vectors-") as file:
        file.truncate(capacity * dim * np.dtype(np.float32).itemsize)
        out = np.memmap(file, np.float32, "r+", shape=(capacity, dim))  # the mapping outlives the handle
    for start in range(0, n, COPY_ROWS):
        stop = min(n, start + COPY_ROWS)
        out[start:stop] = rows[start:stop]
    return out

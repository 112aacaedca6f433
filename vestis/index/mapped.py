"""Vector rows kept in a file instead of in the process's memory.

An index keeps its float32 vectors only to re-score the ``k * k_factor`` candidates of each query
(and for exact search before a structure is built). Left in the saved ``vectors.npy``, they stay
in the OS file cache, shared and reclaimable, and a million 1280-d vectors cost 5.1 GB of disk, not
5.1 GB of the process's memory.

:class:`MappedRows` maps the file for bulk work (a scan, a compaction, a save) and reads the few
rows a query re-scores with ``pread``: touching rows through the mapping would make the kernel map
the neighbouring cached pages in as well (fault-around), until the whole file counted as the
process's resident memory. The saved file is mapped read-only and never written: the first edit
(an overwrite, a swap-remove, growing past the file) moves the rows into an unlinked temporary
file that this process owns, mapped shared, so ``pread`` always sees the current rows.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import IO

import numpy as np

from vestis.errors import VestisError

COPY_ROWS = 1 << 14  # rows copied at once when the rows move into a temporary file
PREAD_MAX_ROWS = 4096  # above this, one system call per row costs more than gathering through the mapping
WARM_CHUNK = 8 << 20  # bytes read at once while warming the OS cache


def _read_through(path: Path) -> None:
    """Read ``path`` once from start to end, so that the OS caches it. Re-scoring reads each query's
    rows at random, and from a cold cache every row is a disk read: 2.7 ms a query for 20 rows of
    139,709 x 1280, against 52 µs cached. The kernel's own read-ahead advice (POSIX_FADV_WILLNEED)
    reads only a few hundred KiB. The cost is the file's size in the OS cache (shared and
    reclaimable: 682 MB at 139,709 x 1280, 5.1 GB at a million), not this process's memory: one
    reused buffer takes the bytes."""
    buffer = bytearray(WARM_CHUNK)
    try:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass
    except OSError:
        pass  # a file removed or unreadable meanwhile: only the warming is lost


class MappedRows:
    """A (capacity, dim) float32 array in a file: ``array`` maps it, ``take`` reads rows."""

    def __init__(self, file: IO[bytes], offset: int, capacity: int, dim: int, owned: bool) -> None:
        self.warming: threading.Thread | None = None  # reads a saved file into the OS cache (see open)
        self.file, self.offset, self.owned = file, offset, owned  # the open file keeps the fd for pread
        self.row_bytes = dim * 4
        self.array = np.memmap(file, np.float32, "r+" if owned else "r", offset=offset, shape=(capacity, dim))

    @classmethod
    def open(cls, path: Path) -> MappedRows:
        """The 2-D float32 array saved at ``path`` (``.npy``), read-only; a background thread
        (``warming``) reads the file once so that re-scoring finds its rows cached."""
        header = np.load(path, mmap_mode="r")
        if header.ndim != 2 or header.dtype != np.float32 or not header.flags.c_contiguous:
            raise VestisError(f"{path} does not hold a C-ordered N x dim float32 array")
        rows = cls(open(path, "rb"), header.offset, header.shape[0], header.shape[1], owned=False)
        rows.warming = threading.Thread(target=_read_through, args=(path,), name="vestis-warm-rows", daemon=True)
        rows.warming.start()
        return rows

    def moved(self, n: int, capacity: int) -> MappedRows:
        """Rows ``[0, n)`` copied into a writable temporary file of ``capacity`` rows (removed by the
        OS when it is closed), in chunks so they are never all in memory at once."""
        dim = self.array.shape[1]
        file = tempfile.TemporaryFile(prefix="vestis-vectors-")
        file.truncate(capacity * self.row_bytes)
        out = MappedRows(file, 0, capacity, dim, owned=True)
        for start in range(0, n, COPY_ROWS):
            stop = min(n, start + COPY_ROWS)
            out.array[start:stop] = self.array[start:stop]
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """``array[rows]`` for an integer array of any shape: a few rows (a query's candidates) read
        with ``pread``, many (a filtered scan) gathered through the mapping in one pass."""
        flat = np.asarray(rows, np.int64).reshape(-1)
        if len(flat) > PREAD_MAX_ROWS:
            return self.array[np.asarray(rows, np.int64)]
        out = np.empty((len(flat), self.array.shape[1]), np.float32)
        fd, size, base = self.file.fileno(), self.row_bytes, self.offset
        for i, row in enumerate(flat.tolist()):
            os.preadv(fd, [out[i]], base + row * size)
        return out.reshape(*np.shape(rows), self.array.shape[1])

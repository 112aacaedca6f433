"""Ids and their float32 vectors in contiguous rows: the one in-memory vector table of vestis.

The index backends keep their exact vectors in it (for exact search and re-scoring), and a
collection keeps its vectors and colour descriptors in it (``extra_dim`` columns beside each
vector) for exact search, colour fusion and as the source its ANN index is built from.
"""

from __future__ import annotations

from itertools import repeat
from pathlib import Path

import numpy as np

from vestis.index.mapped import MappedRows
from vestis.lazy import lazy_import

faiss = lazy_import("faiss")  # its inner-product kernels re-score candidates (imported on first use)
GATHER_BUDGET = 1 << 24  # float32s gathered at once from a mapped file to re-score its candidates


class VectorStore:
    """Caller ids and their float32 vectors (plus an optional ``extra`` row of ``extra_dim`` floats
    per id) in contiguous rows with amortised growth.

    Rows are stable until ``compact`` (tombstoned rows via ``kill``) or ``swap_remove`` (the last
    rows fill the holes), so structures built over row numbers stay valid in between. A store
    loaded with ``mmap=True`` keeps its vectors in the file (``vestis.index.mapped``): ``take``
    reads rows from it, and the first edit moves them to a temporary file, never into memory.
    """

    def __init__(self, dim: int, vectors: np.ndarray | MappedRows | None = None, ids: np.ndarray | None = None,
                 alive: np.ndarray | None = None, *, extra_dim: int = 0, extra: np.ndarray | None = None) -> None:
        self.dim, self.extra_dim = dim, extra_dim
        self._file = vectors if isinstance(vectors, MappedRows) else None
        if self._file is not None:
            vectors = self._file.array
        self._vec = np.empty((0, dim), np.float32) if vectors is None else np.ascontiguousarray(vectors)
        self._ids = np.empty(0, np.int64) if ids is None else ids.astype(np.int64)
        self._alive = np.ones(len(self._ids), bool) if alive is None else alive.astype(bool)
        self._extra = (np.zeros((len(self._ids), extra_dim), np.float32) if extra is None
                       else np.ascontiguousarray(extra, np.float32))
        self.n_rows = len(self._ids)
        self._reindex()

    def _reindex(self) -> None:
        live = np.flatnonzero(self.alive)
        self._row: dict[int, int] = dict(zip(self._ids[live].tolist(), live.tolist(), strict=True))

    @property
    def vectors(self) -> np.ndarray:
        return self._vec[:self.n_rows]

    @property
    def ids(self) -> np.ndarray:
        return self._ids[:self.n_rows]

    @property
    def mapped(self) -> bool:
        """Whether the vectors live in a file rather than in memory."""
        return self._file is not None

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` (an integer array of any shape)."""
        return self._vec[rows] if self._file is None else self._file.take(rows)

    def inner_products(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact inner products (Q, c) of each query (Q, dim), C-contiguous float32, with its
        candidate ``rows`` (Q, c); -inf where a row is -1 or dead. FAISS's kernel reads the rows in
        place (from a mapped file: :meth:`_gathered`), so every candidate is scored by the same
        code, and hence to the same bits, as in :meth:`best_of`."""
        rows = np.ascontiguousarray(rows, np.int64)
        out = np.empty(rows.shape, np.float32)
        if rows.size == 0:
            return out
        ptr, c = faiss.swig_ptr, rows.shape[1]
        parts = [(slice(None), self._vec, rows)] if self._file is None else (  # gathered one part at a time
            (part, *self._gathered(rows[part])[:2]) for part in self._parts(rows))
        for part, block, numbers in parts:
            faiss.fvec_inner_products_by_idx(ptr(out[part]), ptr(queries[part]), ptr(block), ptr(numbers), self.dim,
                                             len(numbers), c)
        out[(rows >= 0) & ~self._alive[np.maximum(rows, 0)]] = -np.inf
        return out

    def best_of(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best of each query's candidate ``rows`` (Q, c) by exact inner product, in one
        FAISS call: (scores, rows), best first; places no candidate filled are (-FLT_MAX, -1). The
        rows (C-contiguous int64) must be live, with any -1 padding at the end. Of equal scores,
        the one that comes first among the candidates wins a place and, within the list, the
        higher row comes first (FAISS's heap); rows read from a file rank as in memory."""
        scores, best = np.empty((len(rows), k), np.float32), np.empty((len(rows), k), np.int64)
        ptr, c = faiss.swig_ptr, rows.shape[1]
        if self._file is None:  # a query's hot path: one call on the rows in place, nothing more
            faiss.knn_inner_products_by_idx(ptr(queries), ptr(self._vec), ptr(rows), self.dim, len(rows),
                                            len(self._vec), c, k, ptr(scores), ptr(best), c)
            return scores, best
        for part in self._parts(rows):
            block, numbers, rising = self._gathered(rows[part])
            faiss.knn_inner_products_by_idx(ptr(queries[part]), ptr(block), ptr(numbers), self.dim, len(numbers),
                                            len(block), c, k, ptr(scores[part]), ptr(best[part]), c)
            best[part] = np.where(best[part] >= 0, rising[best[part]], -1)
        return scores, best

    def _parts(self, rows: np.ndarray) -> list[slice]:
        """Slices of the queries whose candidates, gathered from the mapped file, stay within
        GATHER_BUDGET floats."""
        step = max(1, GATHER_BUDGET // max(1, rows.shape[1] * self.dim))
        return [slice(q0, q0 + step) for q0 in range(0, len(rows), step)]

    def _gathered(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidate ``rows`` (q, c) from the mapped file, for FAISS: their vectors read with
        ``pread`` in rising row order, each candidate's number among them (its rank; -1 kept), so
        that equal scores rank as in memory, and the row of each number."""
        order = np.argsort(rows, axis=1)
        rising = np.take_along_axis(rows, order, axis=1)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(rows.size).reshape(rows.shape), axis=1)
        return self.take(np.maximum(rising, 0)).reshape(-1, self.dim), np.where(rows >= 0, rank, -1), rising.ravel()

    def _writable(self) -> None:
        """Before an in-place edit: rows mapped from a saved file move to a file of our own."""
        if self._file is not None and not self._file.owned:
            self._file = self._file.moved(self.n_rows, len(self._vec))
            self._vec = self._file.array

    def overwrite(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the vectors of existing ``rows``."""
        if len(rows):
            self._writable()
            self._vec[rows] = vectors

    @property
    def extra(self) -> np.ndarray:
        return self._extra[:self.n_rows]

    @property
    def alive(self) -> np.ndarray:
        return self._alive[:self.n_rows]

    @property
    def n_alive(self) -> int:
        return len(self._row)

    def __len__(self) -> int:
        return len(self._row)

    @property
    def n_dead(self) -> int:
        return self.n_rows - len(self._row)

    @property
    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, vectors, extra) of the rows; all live when only ``swap_remove`` removes rows."""
        return self.ids, self.vectors, self.extra

    def __contains__(self, id_: int) -> bool:
        return int(id_) in self._row

    def labels(self, rows: np.ndarray) -> np.ndarray:
        """The ids of ``rows``, -1 where the row is -1."""
        if self.n_rows == 0:
            return np.full(rows.shape, -1, np.int64)
        return np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id, -1 for ids not present."""
        return np.fromiter(map(self._row.get, np.asarray(ids).tolist(), repeat(-1)), np.int64, len(ids))

    def append(self, ids: np.ndarray, vectors: np.ndarray, extra: np.ndarray | None = None) -> None:
        """Append rows for ids that are not present (``extra`` zero when not given)."""
        n, m = self.n_rows, len(ids)
        if n + m > len(self._ids):
            cap = max(n + m, int(len(self._ids) * 1.5) + 16)
            if self._file is not None:
                self._file = self._file.moved(n, cap)
                self._vec = self._file.array
            else:
                vec = np.empty((cap, self.dim), np.float32)
                vec[:n] = self._vec[:n]
                self._vec = vec
            more = np.zeros((cap, self.extra_dim), np.float32)
            more[:n] = self._extra[:n]
            self._extra = more
            self._ids = np.resize(self._ids, cap)
            self._alive = np.resize(self._alive, cap)
        if m:
            self._writable()
            self._vec[n:n + m] = vectors
        self._extra[n:n + m] = 0 if extra is None else extra
        self._ids[n:n + m] = ids
        self._alive[n:n + m] = True
        self._row.update(zip(np.asarray(ids).tolist(), range(n, n + m), strict=True))
        self.n_rows = n + m

    def _pop(self, ids: np.ndarray) -> np.ndarray:
        pop = self._row.pop
        rows = np.fromiter(map(pop, np.unique(np.asarray(ids, np.int64)).tolist(), repeat(-1)), np.int64)
        return rows[rows >= 0]

    def kill(self, ids: np.ndarray) -> np.ndarray:
        """Tombstone the rows of ``ids`` (unknown ids ignored); returns the rows killed."""
        rows = self._pop(ids)
        self._alive[rows] = False
        return rows

    def swap_remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (unknown ids ignored) by moving the last live rows into their holes;
        returns how many."""
        rows = np.sort(self._pop(ids))
        new_n = self.n_rows - len(rows)
        holes = rows[rows < new_n]
        tail = np.setdiff1d(np.arange(new_n, self.n_rows), rows, assume_unique=True)
        if len(holes):
            self._writable()
            self._vec[holes] = self._vec[tail]
        self._extra[holes] = self._extra[tail]
        self._ids[holes] = self._ids[tail]
        self._row.update(zip(self._ids[holes].tolist(), holes.tolist(), strict=True))
        self.n_rows = new_n
        return len(rows)

    def compact(self) -> None:
        """Drop tombstoned rows, keeping the order of the others."""
        if self.n_dead == 0:
            return
        keep = np.flatnonzero(self.alive)
        self._writable()
        step = 1 << 16  # in place, chunk by chunk: keep[i] >= i so sources are never overwritten early
        for a in range(0, len(keep), step):
            chunk = keep[a:a + step]
            self._vec[a:a + len(chunk)] = self._vec[chunk]
            self._extra[a:a + len(chunk)] = self._extra[chunk]
        self._ids[:len(keep)] = self._ids[keep]
        self._alive[:len(keep)] = True
        self.n_rows = len(keep)
        self._reindex()

    def save(self, directory: Path) -> None:
        np.save(directory / "vectors.npy", self.vectors)
        np.save(directory / "ids.npy", self.ids)
        np.save(directory / "alive.npy", self.alive)

    @classmethod
    def load(cls, directory: Path, dim: int, mmap: bool = False) -> VectorStore:
        """The store saved in ``directory``; ``mmap``: keep the vectors in the file (``vestis.index.mapped``)."""
        path = directory / "vectors.npy"
        vectors = MappedRows.open(path) if mmap else np.load(path)
        return cls(dim, vectors, np.load(directory / "ids.npy"), np.load(directory / "alive.npy"))


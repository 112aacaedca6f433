"""Exact search: every vector scored by BLAS matrix products, top-k by the one kernel (vestis.index.topk).

The reference every approximate backend is measured against, and the right choice up to a few
hundred thousand vectors. Vectors live in one contiguous float32 array; re-adding an id overwrites
its row in place and removal moves the last rows into the holes (swap-remove), so nothing is
ever rebuilt.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from vestis.index.vectors import VectorStore
from vestis.index.backend import (
    Backend,
    Param,
    Params,
    check_queries,
    check_vectors,
    write_meta,
)
from vestis.index.topk import exact_search


class ExactIndex(Backend):
    NAME = "exact"
    SPECS: ClassVar[dict[str, str]] = {
        "exact": "brute force over all vectors with NumPy/BLAS (exact; no parameters)"}

    def __init__(self, dim: int, head: str = "exact", schema: dict[str, Param] | None = None,
                 params: Params | None = None) -> None:
        super().__init__(dim, head, schema or {}, params or {})
        self._store = VectorStore(self.dim)

    def __len__(self) -> int:
        return self._store.n_alive

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_vectors(ids, vectors, self.dim)
        rows = self._store.rows_of(ids)
        known = rows >= 0
        self._store.overwrite(rows[known], vectors[known])
        self._store.append(ids[~known], vectors[~known])

    def remove(self, ids: np.ndarray) -> int:
        return self._store.swap_remove(np.asarray(ids, dtype=np.int64).reshape(-1))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_queries(queries, self.dim, k)
        scores, rows = exact_search(q, self._store.vectors, k)
        return scores, self._store.labels(rows)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self._store.save(directory)
        write_meta(directory, {**self.info(), "rows": self._store.n_rows})

    @classmethod
    def load(cls, directory: Path, mmap: bool = False) -> ExactIndex:
        directory = Path(directory)
        index, _ = cls._from_meta(directory)
        index._store = VectorStore.load(directory, index.dim, mmap)
        return index

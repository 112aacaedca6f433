"""One protocol for every vector index backend (exact, FAISS, Annoy, KD-tree, k-means clusters).

Vectors are L2-normalised, scores are inner products (cosine similarity), ids are int64 labels
chosen by the caller (the collection's row ids). Modelled on FAISS: add / search / remove /
save / load, and a backend chosen by a spec string (see ``vestis.index.make_index``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class VectorIndex(ABC):
    spec: str  # the spec string that recreates this backend with these parameters
    dim: int

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (N x dim float32) under int64 ids; re-adding an existing id replaces it."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; unknown ids are ignored. Returns how many were removed."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product. Returns (scores float32 Q x k, ids int64 Q x k), best first;
        rows are padded with score -inf and id -1 when fewer than k vectors exist."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the index into ``directory`` (which exists and is empty). The caller makes the
        write atomic by saving to a temporary directory and renaming it into place."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, mmap: bool = False) -> VectorIndex:
        """Read an index written by ``save``; ``mmap``: map its float32 vectors from the file
        instead of reading them into memory (``vestis.index.mapped``)."""

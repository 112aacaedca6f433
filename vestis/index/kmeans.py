"""k-means cluster backend, as in the deep-fashion-retrieval project: the vectors are clustered
with scikit-learn's ``MiniBatchKMeans`` (``clusters`` centroids, trained on a seeded sample of at
most 256 vectors per centroid), and a query scores the members of its ``probe`` nearest clusters
exactly.

Rules: the clusters are trained once ``max(train_min, clusters)`` vectors exist (exact search
until then); later vectors join their nearest existing centroid, and the clusters are retrained
when the vectors have doubled since training or tombstones exceed 20% (see ``StructuredIndex``).
A batch of queries is processed cluster by cluster: one matrix product per probed cluster, for
all the queries that probe it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vestis.index.backend import Param, StructuredIndex
from vestis.index.topk import SCORE_BUDGET, merge_topk, topk

PARAMS = {"clusters": Param(50, 1), "probe": Param(5, 1, search=True), "train_min": Param(1000, 1),
          "seed": Param(0)}
SAMPLE_PER_CLUSTER = 256


class KMeansIndex(StructuredIndex):
    NAME = "kmeans"
    SPECS: ClassVar[dict[str, str]] = {
        "kmeans": "k-means clusters; a query scans its `probe` nearest clusters exactly"}
    extendable = True
    trainable = True

    @classmethod
    def schema_for(cls, head: str) -> dict:
        return PARAMS

    def _min_rows(self) -> int:
        return max(int(self.params["train_min"]), int(self.params["clusters"]))

    def _build(self) -> None:
        from sklearn.cluster import MiniBatchKMeans  # scikit-learn takes longer to import than a small search

        vectors, clusters = self._store.vectors, int(self.params["clusters"])
        rng = np.random.default_rng(int(self.params["seed"]))
        size = min(len(vectors), SAMPLE_PER_CLUSTER * clusters)
        sample = vectors[np.sort(rng.choice(len(vectors), size, replace=False))]
        kmeans = MiniBatchKMeans(n_clusters=clusters, random_state=int(self.params["seed"])).fit(sample)
        self._set_centroids(kmeans.cluster_centers_.astype(np.float32))
        self._group(self._nearest(vectors))

    def _set_centroids(self, centroids: np.ndarray) -> None:
        self._centroids = np.ascontiguousarray(centroids)
        self._half_norms = 0.5 * np.einsum("ij,ij->i", centroids, centroids)

    def _affinity(self, x: np.ndarray) -> np.ndarray:
        """Larger for nearer centroids: -|x - c|^2 / 2 up to a per-row constant."""
        return x @ self._centroids.T - self._half_norms

    def _nearest(self, x: np.ndarray) -> np.ndarray:
        step = max(1, SCORE_BUDGET // len(self._centroids))
        return np.concatenate([self._affinity(x[a:a + step]).argmax(axis=1) for a in range(0, len(x), step)])

    def _group(self, assign: np.ndarray) -> None:
        """Cluster lists as one array of rows sorted by cluster plus offsets."""
        self._assign = assign.astype(np.int64, copy=False)
        self._order = np.argsort(self._assign, kind="stable")
        counts = np.bincount(self._assign, minlength=len(self._centroids))
        self._offsets = np.concatenate([[0], np.cumsum(counts)])

    def _extend(self, start: int) -> None:
        self._group(np.concatenate([self._assign, self._nearest(self._store.vectors[start:])]))

    def _drop(self) -> None:
        self._centroids = self._assign = self._order = self._offsets = None

    def _candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        nq, nc = len(queries), len(self._centroids)
        probe = min(int(self.params["probe"]), nc)
        near = self._affinity(queries)
        probed = np.argpartition(-near, probe - 1, axis=1)[:, :probe] if probe < nc else near.argsort(axis=1)
        pair_c = probed.ravel()
        order = np.argsort(pair_c, kind="stable")
        pair_q, pair_c = np.repeat(np.arange(nq), probe)[order], pair_c[order]
        clusters, starts = np.unique(pair_c, return_index=True)
        best_s = np.full((nq, k), -np.inf, np.float32)
        best_r = np.full((nq, k), -1, np.int64)
        vectors = self._store.vectors
        ends = [*starts[1:].tolist(), len(pair_c)]
        for c, a, b in zip(clusters.tolist(), starts.tolist(), ends, strict=True):
            members = self._order[self._offsets[c]:self._offsets[c + 1]]
            if members.size:
                qi = pair_q[a:b]
                s, cols = topk(queries[qi] @ vectors[members].T, k)
                rows = np.where(cols >= 0, members[np.maximum(cols, 0)], -1)
                best_s[qi], best_r[qi] = merge_topk([best_s[qi], s], [best_r[qi], rows], k)
        return best_r

    def _save_structure(self, directory: Path) -> dict[str, Any]:
        np.save(directory / "centroids.npy", self._centroids)
        np.save(directory / "assign.npy", self._assign)
        return {}

    def _load_structure(self, directory: Path, meta: dict[str, Any]) -> bool:
        self._set_centroids(np.load(directory / "centroids.npy"))
        self._group(np.load(directory / "assign.npy"))
        return True

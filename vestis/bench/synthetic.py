"""Vectors generated to match the distribution of real embeddings, for benchmarks at sizes that
have no real data (1,000,000 vectors shaped like the 44,441 Fashion Product Images embeddings).

Model: a mixture of probabilistic PCA (Tipping & Bishop, 1999). k-means (FAISS) splits the real
vectors into ``clusters`` groups; each group keeps its share of the vectors, its mean, its top
``rank`` principal directions with their variances, and one isotropic noise variance for the
remaining ``dim - rank`` directions (the mean of the discarded eigenvalues). A sample picks a
group by its share, draws ``mean + directions * N(0, variances) + N(0, noise)`` and is
L2-normalised. The samples keep the real clusters and their dominant directions; they do not
reproduce a catalogue's near-duplicates, so nearest-neighbour similarities differ somewhat:
``neighbour_stats`` measures both sets the same way so the difference can be reported.

Without real vectors, ``MixtureModel.random`` gives an arbitrary clustered mixture at any
dimension (for tests and quick runs), labelled as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from vestis.errors import VestisError
from vestis.index.topk import exact_search

CHUNK = 65_536  # vectors generated at once


@dataclass
class MixtureModel:
    """A mixture of probabilistic PCA components (see the module docstring)."""

    weights: np.ndarray  # (C,) shares, summing to 1
    means: np.ndarray  # (C, dim)
    directions: np.ndarray  # (C, rank, dim), orthonormal rows
    stddevs: np.ndarray  # (C, rank) standard deviation along each direction
    noise: np.ndarray  # (C,) isotropic standard deviation of the rest
    description: str

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @classmethod
    def fit(cls, vectors: np.ndarray, *, clusters: int = 256, rank: int = 64, seed: int = 0,
            label: str = "real vectors") -> MixtureModel:
        """Fit the mixture to ``vectors`` (N x dim, N >= 2 * clusters). The defaults matched the
        neighbour statistics of the Fashion Product Images embeddings best of five settings
        (64-512 clusters, rank 32-128; BENCHMARKS.md, "Generated vectors")."""
        x = np.ascontiguousarray(vectors, np.float32)
        n, dim = x.shape
        if n < 2 * clusters:
            raise VestisError(f"fitting {clusters} clusters needs at least {2 * clusters} vectors, got {n}")
        kmeans = faiss.Kmeans(dim, clusters, niter=20, seed=seed, max_points_per_centroid=n)
        kmeans.train(x)
        assign = kmeans.index.search(x, 1)[1][:, 0]
        weights, means, directions, stddevs, noise = [], [], [], [], []
        for c in range(clusters):
            members = x[assign == c]
            if len(members) < 2:
                continue
            mean = members.mean(axis=0)
            _, s, vt = np.linalg.svd(members - mean, full_matrices=False)
            variances = s**2 / (len(members) - 1)
            r = min(rank, len(variances))
            rest = max(dim - r, 1)
            weights.append(len(members))
            means.append(mean)
            directions.append(np.pad(vt[:r], ((0, rank - r), (0, 0))))
            stddevs.append(np.pad(np.sqrt(variances[:r]), (0, rank - r)))
            noise.append(np.sqrt(variances[r:].sum() / rest))
        w = np.asarray(weights, np.float64)
        return cls(w / w.sum(), np.stack(means), np.stack(directions).astype(np.float32),
                   np.stack(stddevs).astype(np.float32), np.asarray(noise, np.float32),
                   f"mixture of {len(w)} PPCA components (rank {rank}) fitted to {n:,} {label}")

    @classmethod
    def random(cls, dim: int, *, clusters: int = 64, rank: int = 8, spread: float = 0.5,
               seed: int = 0) -> MixtureModel:
        """An arbitrary clustered mixture on the unit sphere (no real data behind it)."""
        rng = np.random.default_rng(seed)
        means = rng.standard_normal((clusters, dim)).astype(np.float32)
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        directions = np.linalg.qr(rng.standard_normal((clusters, dim, rank)))[0].transpose(0, 2, 1)
        stddevs = np.full((clusters, rank), spread / np.sqrt(rank), np.float32)
        noise = np.full(clusters, 0.3 * spread / np.sqrt(dim), np.float32)
        return cls(np.full(clusters, 1 / clusters), means, directions.astype(np.float32), stddevs, noise,
                   f"random mixture of {clusters} clusters at dim {dim} (synthetic, no real data)")

    def sample(self, n: int, *, seed: int = 0, out: np.ndarray | None = None) -> np.ndarray:
        """``n`` L2-normalised float32 samples, written into ``out`` (e.g. a memory map) if given."""
        out = np.empty((n, self.dim), np.float32) if out is None else out
        rng = np.random.default_rng(seed)
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            counts = rng.multinomial(m, self.weights)
            x = np.empty((m, self.dim), np.float32)
            row = 0
            for c in np.flatnonzero(counts).tolist():
                z = rng.standard_normal((counts[c], self.stddevs.shape[1]), dtype=np.float32) * self.stddevs[c]
                part = rng.standard_normal((counts[c], self.dim), dtype=np.float32) * self.noise[c]
                part += self.means[c]
                part += z @ self.directions[c]
                x[row:row + counts[c]] = part
                row += counts[c]
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[start:start + m] = x[rng.permutation(m)]
        return out

    def save(self, path: Path) -> None:
        np.savez(path, weights=self.weights, means=self.means, directions=self.directions,
                 stddevs=self.stddevs, noise=self.noise, description=self.description)

    @classmethod
    def load(cls, path: Path) -> MixtureModel:
        with np.load(path) as z:
            return cls(z["weights"], z["means"], z["directions"], z["stddevs"], z["noise"], str(z["description"]))


def neighbour_stats(base: np.ndarray, queries: np.ndarray, k: int = 10) -> dict[str, float]:
    """How close neighbours are, to compare generated with real vectors: median cosine of the 1st
    and k-th nearest neighbour of each query, and the median gap between them (small gaps make
    approximate search harder)."""
    scores, _ = exact_search(np.ascontiguousarray(queries, np.float32), np.ascontiguousarray(base), k)
    return {"nn1_cos_median": float(np.median(scores[:, 0])),
            f"nn{k}_cos_median": float(np.median(scores[:, k - 1])),
            f"gap_1_{k}_median": float(np.median(scores[:, 0] - scores[:, k - 1]))}

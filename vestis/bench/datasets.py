"""Prepared benchmark datasets: a collection's or a .npy file's vectors with queries held out, or
generated vectors; base, queries and exact ground truth cached on disk per dataset."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from vestis.bench.synthetic import MixtureModel, neighbour_stats
from vestis.errors import VestisError
from vestis.index.topk import exact_search

DATASET_VERSION = 2  # bump when the prepared files change
TIE_EPSILON = 1e-5  # cosine slack when matching the k-th neighbour's score (float32 rounding)
Log = Callable[[str], None]


def default_cache_dir() -> Path:
    """Where prepared datasets live: ``$VESTIS_CACHE_DIR/bench``, else ``~/.cache/vestis/bench``."""
    root = os.environ.get("VESTIS_CACHE_DIR")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vestis"
    return base.expanduser() / "bench"




@dataclass
class Dataset:
    """Prepared vectors on disk: ``base.npy`` (indexed), ``queries.npy`` (held out), ``truth.npy`` and
    ``truth_scores.npy`` (exact top-k rows of base and their cosines per query) and ``dataset.json``
    (``meta``: label, provenance)."""

    directory: Path
    meta: dict[str, Any]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(base, queries, truth, truth_scores); base is memory-mapped."""
        d = self.directory
        return (np.load(d / "base.npy", mmap_mode="r"), np.load(d / "queries.npy"), np.load(d / "truth.npy"),
                np.load(d / "truth_scores.npy"))


def load_vectors(source: str | Path) -> tuple[np.ndarray, str]:
    """Vectors of a collection directory or a ``.npy`` file (N x dim float32), and a label."""
    path = Path(source)
    if path.suffix == ".npy" and path.is_file():
        vectors = np.load(path, mmap_mode="r")
        if vectors.ndim != 2:
            raise VestisError(f"{path} holds an array of shape {vectors.shape}; expected N x dim vectors")
        return vectors, f"vectors of {path.name}"
    from vestis.store.factory import collection_exists, open_collection

    if not collection_exists(source):
        raise VestisError(f"{source} is neither a collection directory nor a .npy file (or say 'generated')")
    with open_collection(source) as collection:
        vectors = collection.table().view[1].copy()
        return vectors, f"{collection.encoder_name} embeddings of {path.name}"


def _identity(source: str | Path | None) -> str:
    """What a cached dataset depends on: a file's size and modification time, a collection's
    generation (bumped by every write)."""
    if source is None:
        return ""
    path = Path(source).resolve()
    if path.is_file():
        return f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    from vestis.store.factory import collection_exists, open_collection

    if not collection_exists(source):
        return str(path)
    with open_collection(source) as collection:
        return f"{path}:generation {collection.generation}"


def prepare_dataset(source: str, *, n: int | None = None, dim: int | None = None, queries: int = 1000,
                    like: str | None = None, k: int = 10, seed: int = 0, cache_dir: Path | None = None,
                    threads: int = 1, log: Log = print) -> Dataset:
    """Base vectors, held-out queries and exact ground truth for ``source`` (see the module doc)."""
    generated = source == "generated"
    if generated and n is None:
        raise VestisError("generated vectors need a size: give --n (e.g. --n 1000000)")
    if not generated and like is not None:
        raise VestisError("--like only applies to --vectors generated")
    if dim is not None and not (generated and like is None):
        raise VestisError("--dim only applies to generated vectors without --like (real vectors keep their "
                          "dimension; a PCA-reduced scan is the pca256 backend)")
    key = json.dumps([DATASET_VERSION, source, _identity(None if generated else source), _identity(like), n, dim,
                      queries, k, seed])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    directory = (cache_dir or default_cache_dir()) / f"{Path(source).name or source}-{n or 'all'}-{digest}"
    if (directory / "dataset.json").exists():
        log(f"using prepared dataset {directory}")
        return Dataset(directory, json.loads((directory / "dataset.json").read_text()))
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with threadpool_limits(threads):
        meta = (_generate if generated else _hold_out)(tmp, source, n=n, dim=dim, queries=queries, like=like,
                                                       seed=seed, log=log)
        base, qs = np.load(tmp / "base.npy", mmap_mode="r"), np.load(tmp / "queries.npy")
        log(f"exact ground truth: {len(qs)} queries x {len(base):,} vectors")
        scores, rows = exact_search(qs, base, k)
        np.save(tmp / "truth.npy", rows)
        np.save(tmp / "truth_scores.npy", scores)
    meta.update(n=len(base), dim=base.shape[1], queries=len(qs), k=k, seed=seed)
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return Dataset(directory, meta)


def _hold_out(directory: Path, source: str, *, n: int | None, queries: int, seed: int, log: Log,
              **_: Any) -> dict[str, Any]:
    vectors, label = load_vectors(source)
    if len(vectors) <= queries:
        raise VestisError(f"{source} holds {len(vectors)} vectors: too few to hold out {queries} queries")
    order = np.random.default_rng(seed).permutation(len(vectors))
    rest = np.sort(order[queries:][:n])
    np.save(directory / "queries.npy", np.ascontiguousarray(vectors[np.sort(order[:queries])], np.float32))
    np.save(directory / "base.npy", np.ascontiguousarray(vectors[rest], np.float32))
    log(f"{label}: {len(rest):,} indexed, {queries} held-out queries")
    return {"label": f"{label} (real)", "generated": False, "source": str(source),
            "description": f"{len(rest):,} real vectors; {queries} other vectors of the same set as queries"}


def _generate(directory: Path, source: str, *, n: int, dim: int | None, queries: int, like: str | None,
              seed: int, log: Log) -> dict[str, Any]:
    match = None
    if like is not None:
        real, label = load_vectors(like)
        real = np.ascontiguousarray(real, np.float32)
        log(f"fitting the generator to {len(real):,} {label}")
        model = MixtureModel.fit(real, seed=seed, label=label)
        m = min(len(real) - queries, 100_000)  # compare both sets at the real size, queries held out alike
        order = np.random.default_rng(seed).permutation(len(real))
        fake = model.sample(m + queries, seed=seed + 2)
        match = {"n": m, "real": neighbour_stats(real[np.sort(order[queries:][:m])], real[order[:queries]]),
                 "generated": neighbour_stats(fake[:m], fake[m:])}
    else:
        model = MixtureModel.random(dim or 128, seed=seed)
    model.save(directory / "model.npz")
    log(f"generating {n:,} + {queries} vectors: {model.description}")
    base = np.lib.format.open_memmap(directory / "base.npy", "w+", np.float32, (n, model.dim))
    model.sample(n, seed=seed, out=base)
    base.flush()
    del base
    np.save(directory / "queries.npy", model.sample(queries, seed=seed + 1))
    return {"label": f"GENERATED {n:,} x {model.dim} ({'like ' + Path(like).name if like else 'random mixture'})",
            "generated": True, "source": "generated", "like": like, "description": model.description,
            "distribution_check": match}

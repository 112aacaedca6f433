"""FAISS backends: any ``faiss.index_factory`` string, plus friendly aliases:

* ``flat``  -> ``Flat``: exact, FAISS's own BLAS kernels;
* ``hnsw``  -> ``HNSW{M}``: graph, ``efConstruction`` / ``efSearch`` as in FAISS;
* ``ivf``   -> ``IVF{nlist},Flat``: ``nlist=auto`` is ~4*sqrt(n), at most n/39 (FAISS's minimum
  of 39 training points per centroid), chosen when the index is trained;
* ``ivfpq`` -> ``IVF{nlist},PQ{m}x{nbits}``: ``m=auto`` is the largest of 64, 32, ..., 2 that splits
  dim into sub-vectors of at least 4 dimensions;
* ``lsh``   -> ``LSH{nbits}r``: sign bits of a random rotation, Hamming distance (``nbits=auto``: dim).

Indexes are built with ``METRIC_INNER_PRODUCT``; factory strings FAISS only offers for L2 (LSH)
are built with ``METRIC_L2``, which orders unit vectors identically. FAISS numbers vectors in
insertion order, which here is the row order of the stored vectors, so vestis keeps the id
mapping itself (do not put ``IDMap`` in the factory string).

The float32 vectors are kept beside the FAISS index (``n * dim * 4`` bytes more memory and disk).
That one copy serves every factory string the same way: exact search before training, training
and rebuilding after deletes (HNSW cannot remove, so removals are tombstones until a rebuild), and
exact re-scoring of the ``k * k_factor`` candidates, which turns LSH's Hamming distances and
PQ's approximate distances into true cosines and re-ranks them.

Training rule (IVF, PQ and other trainable factories): the index is trained the first time it is
used (search, save, ``build()``) with at least ``train_min`` vectors (``auto``: 1000, or 39 per
centroid of the largest k-means in the index when more), on a seeded sample of at most 64 vectors
per centroid (16,384 vectors for factories without k-means: PCA, scalar quantisers); it is
retrained when the vectors have doubled since. Until then search is exact.
FAISS's multi-threaded HNSW insertion can make two builds of the same data differ slightly; IVF
and PQ training is seeded; a saved index always reloads identically.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vestis.errors import IndexSpecError, VestisError
from vestis.index.backend import AUTO, Param, Params, StructuredIndex, check_queries, format_params, parse_params
from vestis.lazy import lazy_import

faiss = lazy_import("faiss")  # imported on first use: exact-search collections never need it

TRAIN_MIN = 1000
POINTS_PER_CENTROID = 39  # FAISS warns below this many training points per centroid
SAMPLE_PER_CENTROID = 64
PLAIN_TRAIN_SAMPLE = 16_384  # training sample of factories without k-means (PCA, scalar quantisers)
SEARCH_PARAMS = ("nprobe", "efSearch")  # set through faiss.ParameterSpace


def auto_nlist(n: int) -> int:
    """IVF lists for n vectors: ~4*sqrt(n), keeping at least 39 training points per list."""
    return max(1, min(round(4 * math.sqrt(n)), n // POINTS_PER_CENTROID))


def auto_pq_m(dim: int) -> int:
    """PQ sub-quantizers: the largest of 64, 32, ..., 2 that splits dim into >= 4-d sub-vectors."""
    return next((m for m in (64, 32, 16, 8, 4, 2) if dim % m == 0 and dim // m >= 4), 1)


def _resolved(value: int | str | None, auto: int) -> int:
    return auto if value == AUTO else int(value)


@dataclass(frozen=True)
class Flavour:
    summary: str
    params: dict[str, Param]
    factory: Callable[[Params, int, int], str]  # (params, dim, n) -> factory string


_NPROBE = Param(16, 1, search=True)
_NLIST = Param(AUTO, 1, auto=True)
_TRAIN = {"train_min": Param(AUTO, 1, auto=True), "seed": Param(0)}

FLAVOURS: dict[str, Flavour] = {
    "flat": Flavour("FAISS IndexFlatIP (exact)", {}, lambda p, d, n: "Flat"),
    "hnsw": Flavour(
        "FAISS HNSW graph",
        {"M": Param(32, 2), "efConstruction": Param(40, 1), "efSearch": Param(64, 1, search=True)},
        lambda p, d, n: f"HNSW{p['M']}"),
    "ivf": Flavour(
        "FAISS inverted lists (nlist=auto: ~4*sqrt(n))",
        {"nlist": _NLIST, "nprobe": _NPROBE, **_TRAIN},
        lambda p, d, n: f"IVF{_resolved(p['nlist'], auto_nlist(n))},Flat"),
    "ivfpq": Flavour(
        "FAISS inverted lists of product-quantised codes, re-ranked exactly",
        {"nlist": _NLIST, "m": Param(AUTO, 1, auto=True), "nbits": Param(8, 1), "nprobe": _NPROBE,
         "k_factor": Param(4, 1, search=True), **_TRAIN},
        lambda p, d, n: f"IVF{_resolved(p['nlist'], auto_nlist(n))},PQ{_resolved(p['m'], auto_pq_m(d))}"
                        f"x{p['nbits']}"),
    "lsh": Flavour(
        "FAISS random-projection LSH (Hamming), re-ranked exactly (nbits=auto: dim)",
        {"nbits": Param(AUTO, 1, auto=True), "k_factor": Param(10, 1, search=True)},
        lambda p, d, n: f"LSH{_resolved(p['nbits'], d)}r"),
    "faiss": Flavour(
        "any faiss.index_factory string, e.g. faiss:IVF1024,PQ32?nprobe=32",
        {"nprobe": Param(None, 1, search=True), "efSearch": Param(None, 1, search=True),
         "k_factor": Param(1, 1, search=True), **_TRAIN},
        lambda p, d, n: str(p["factory"])),
}


def _faiss_message(error: Exception) -> str:
    """The useful tail of a FAISS C++ exception ("... at file.cpp:123: <message>")."""
    text = str(error).strip().splitlines()[0]
    match = re.search(r"\.(?:cpp|h):\d+: (.*)", text)
    return match.group(1) if match else text


def _parts(index: faiss.Index) -> list[Any]:
    """The index and the IVF index inside it (if any), downcast to their concrete classes."""
    ivf = faiss.try_extract_index_ivf(index)
    return [faiss.downcast_index(part) for part in (index, ivf) if part is not None]


def _centroids(index: faiss.Index, lists: bool = True) -> int:
    """Centroids of the largest k-means that training ``index`` runs: PQ codes, and IVF lists
    unless ``lists`` is False."""
    counts = [part.nlist for part in _parts(index) if lists and hasattr(part, "nlist")]
    counts += [part.pq.ksub for part in _parts(index) if hasattr(part, "pq")]
    return max(counts, default=0)


_UNRANKED = float(-np.finfo(np.float32).max)  # the score FAISS's heap gives a place nothing filled


def _complete(rows: np.ndarray) -> bool:
    """Whether FAISS filled every query's candidate list (no -1 padding at the end)."""
    return rows.item(-1) >= 0 if len(rows) == 1 else bool((rows[:, -1] >= 0).all())


def _answered(scores: np.ndarray) -> bool:
    """Whether every query's best and ``k``-th scores are finite, as they are for a query of finite
    values. A query with NaN or infinite values has NaN inner products (never ranked, so the
    scores stay at FAISS's lowest float) or infinite ones: this replaces a pass over the query's
    values, and the general path then checks them and raises."""
    if len(scores) == 1:
        return math.isfinite(scores.item(0)) and scores.item(-1) > _UNRANKED
    return bool(np.isfinite(scores[:, 0]).all() and (scores[:, -1] > _UNRANKED).all())


class FaissIndex(StructuredIndex):
    NAME = "faiss"
    SPECS: ClassVar[dict[str, str]] = {name: f.summary for name, f in FLAVOURS.items()}
    extendable = True

    def __init__(self, dim: int, head: str, schema: dict[str, Param], params: Params,
                 factory: str | None = None) -> None:
        super().__init__(dim, head, schema, params)
        self._flavour = FLAVOURS[head]
        self._raw_factory = factory
        self._index: faiss.Index | None = None
        self._factory_used: str | None = None
        if factory is not None and "idmap" in factory.lower():
            raise IndexSpecError("vestis maps ids itself: leave IDMap out of the faiss factory string")
        probe = self._construct(10 * TRAIN_MIN)  # validates the factory string and the parameters
        self._configure(probe)
        self._set_search_params(probe)
        self.trainable = not probe.is_trained
        fixed_lists = self.params.get("nlist") != AUTO  # auto nlist adapts to n: no minimum from it
        self._auto_train_min = max(TRAIN_MIN, POINTS_PER_CENTROID * _centroids(probe, fixed_lists))

    @classmethod
    def schema_for(cls, head: str) -> dict[str, Param]:
        return FLAVOURS[head].params

    @classmethod
    def create(cls, head: str, body: str, dim: int) -> FaissIndex:
        schema = cls.schema_for(head)
        if head != "faiss":
            return cls(dim, head, schema, parse_params(body, schema, head))
        factory, _, text = body.partition("?")
        if not factory.strip():
            raise IndexSpecError("faiss needs a factory string, e.g. faiss:HNSW32 or "
                                 "faiss:IVF256,Flat?nprobe=16")
        return cls(dim, head, schema, parse_params(text, schema, "faiss"), factory.strip())

    @property
    def spec(self) -> str:
        if self._raw_factory is None:
            return super().spec
        return f"faiss:{self._raw_factory}?{format_params(self.params)}"

    # -- construction
    def _factory(self, n: int) -> str:
        return self._flavour.factory({**self.params, "factory": self._raw_factory}, self.dim, n)

    def _construct(self, n: int) -> faiss.Index:
        factory = self._factory(n)
        try:
            return faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            try:  # some factories (LSH) exist only for L2, which ranks unit vectors the same way
                return faiss.index_factory(self.dim, factory, faiss.METRIC_L2)
            except RuntimeError:
                raise IndexSpecError(f"FAISS cannot build {factory!r} for dimension {self.dim}: "
                                     f"{_faiss_message(error)}") from None

    def _configure(self, index: faiss.Index) -> None:
        """Build-time settings: seeds of the k-means runs, HNSW efConstruction, and no polysemous
        PQ training (it only serves polysemous_ht search and costs seconds even on small data)."""
        seed = int(self.params.get("seed") or 0)
        for part in _parts(index):
            if hasattr(part, "cp"):
                part.cp.seed = seed
            if hasattr(part, "pq"):
                part.pq.cp.seed = seed
            if hasattr(part, "do_polysemous_training"):
                part.do_polysemous_training = False
            if hasattr(part, "hnsw") and "efConstruction" in self.params:
                part.hnsw.efConstruction = int(self.params["efConstruction"])

    def _set_search_params(self, index: faiss.Index) -> None:
        space = faiss.ParameterSpace()
        for name in SEARCH_PARAMS:
            if self.params.get(name) is not None:
                try:
                    space.set_index_parameter(index, name, int(self.params[name]))
                except RuntimeError:
                    factory = self._factory(0)
                    raise IndexSpecError(f"{name} does not apply to FAISS index {factory!r}") from None

    def _apply_search_params(self) -> None:
        if self._index is not None:
            self._set_search_params(self._index)

    def _k_factor(self) -> int:
        return int(self.params.get("k_factor") or 1)

    def _min_rows(self) -> int:
        if not self.trainable:
            return 1
        if self.params["train_min"] != AUTO:
            return int(self.params["train_min"])
        return self._auto_train_min

    # -- structure
    def _build(self) -> None:
        # Plain ndarrays, not memory maps: FAISS's wrappers (torch_utils, once anything imports it)
        # take an ndarray subclass for a torch tensor.
        vectors = np.asarray(self._store.vectors)
        index = self._construct(len(vectors))
        self._configure(index)
        if not index.is_trained:
            centroids = _centroids(index)
            size = min(len(vectors), SAMPLE_PER_CENTROID * centroids if centroids else PLAIN_TRAIN_SAMPLE)
            rng = np.random.default_rng(int(self.params.get("seed") or 0))
            sample = np.sort(rng.choice(len(vectors), size, replace=False))
            try:
                index.train(vectors[sample])
            except RuntimeError as error:
                raise VestisError(f"FAISS could not train {self._factory(len(vectors))!r} on {size} vectors: "
                                  f"{_faiss_message(error)} (set a larger train_min)") from None
        index.add(vectors)
        self._index, self._factory_used = index, self._factory(len(vectors))

    def _extend(self, start: int) -> None:
        self._index.add(np.asarray(self._store.vectors[start:]))

    def _drop(self) -> None:
        self._index = self._factory_used = None

    def _candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        return self._index.search(np.asarray(queries), k)[1]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Against a structure that holds every row, none removed (a served collection's usual
        state): FAISS gives the candidates (its C++ search, without its Python wrapper's checks,
        which ``check_queries`` has made) and one more FAISS call re-scores and ranks them
        (``VectorStore.best_of``). The general path (``StructuredIndex.search``) ranks them the
        same way, so both give the same ids in the same order and the same float32 scores; it
        takes anything else (a delta, tombstones, too few candidates)."""
        st, built = self._store, self._built
        want = min(built, k * self._k_factor()) if isinstance(k, int) else 0
        if not built or st.n_rows != built or len(st) != built or want < k:
            return super().search(queries, k)
        q = check_queries(queries, self.dim, k, finite=False)  # see _answered
        found, rows = np.empty((len(q), want), np.float32), np.empty((len(q), want), np.int64)
        self._index.search_c(len(q), faiss.swig_ptr(q), want, faiss.swig_ptr(found), faiss.swig_ptr(rows), None)
        if not _complete(rows):
            return super().search(q, k)
        scores, best = st.best_of(q, rows, k)
        return (scores, st.ids[best]) if _answered(scores) else super().search(q, k)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "factory": self._factory_used, "trainable": self.trainable}

    def _save_structure(self, directory: Path) -> dict[str, Any]:
        faiss.write_index(self._index, str(directory / "faiss.index"))
        return {}

    def _load_structure(self, directory: Path, meta: dict[str, Any]) -> bool:
        self._index = faiss.read_index(str(directory / "faiss.index"))
        self._factory_used = meta["factory"]
        return True

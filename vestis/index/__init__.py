"""Vector index backends behind one protocol (``vestis.index.base.VectorIndex``), chosen by a spec.

Spec grammar (one form for every backend; parameter names are case-insensitive)::

    spec    := NAME [":" params]                  exact, flat, hnsw, ivf, ivfpq, lsh, annoy, kdtree, kmeans
             | "faiss:" FACTORY ["?" params]      FACTORY: any faiss.index_factory string (commas allowed)
    params  := key "=" value ("," key "=" value)*
    value   := integer | "auto"                   (auto only where the default is auto)

Examples: ``exact``, ``hnsw:M=32,efSearch=64``, ``ivf:nlist=256,nprobe=16``, ``ivfpq:nbits=8``,
``lsh``, ``faiss:IVF256,Flat?nprobe=16``, ``annoy:trees=50,search_k=-1``, ``kdtree:leaf_size=40``,
``kmeans:clusters=50,probe=5``. ``describe_specs()`` lists every name with its parameters and
defaults. Search-time parameters (``nprobe``, ``efSearch``, ``k_factor``, ``search_k``, ``probe``) can
be changed on a built or loaded index with ``index.set_params(...)``; ``index.spec`` always gives the
full spec (defaults filled in) that recreates the index as it now is.

Common behaviour: vectors are L2-normalised float32 (others are rejected), scores are inner
products (cosine), ids are the caller's non-negative int64 labels; re-adding an id replaces its
vector. ``search`` takes a (Q, dim) batch or a single (dim,) query (answered as one row) and pads
rows with score -inf / id -1 only when fewer than k vectors exist. ``save`` writes ``index.json``
(backend, spec, dim, counts, format version) plus the backend's files; ``load_index`` reads them
back, and the loaded index gives the same results and accepts further adds and removes.
Approximate backends build lazily (on search, save or ``build()``) and re-score candidates
exactly; the delta, tombstone, training and rebuild rules are in ``vestis.index.backend``.
"""

from __future__ import annotations

from pathlib import Path

from vestis.errors import IndexSpecError, VestisError
from vestis.index.backend import Backend, IndexInputError, read_meta
from vestis.index.annoy_backend import AnnoyIndex
from vestis.index.auto import ANN_SPEC, AUTO_SPEC, exact_limit
from vestis.index.base import VectorIndex
from vestis.index.exact import ExactIndex
from vestis.index.faiss_backend import FaissIndex
from vestis.index.kdtree import KDTreeIndex
from vestis.index.kmeans import KMeansIndex

_CLASSES: tuple[type[Backend], ...] = (ExactIndex, FaissIndex, AnnoyIndex, KDTreeIndex, KMeansIndex)
_BY_HEAD = {head: cls for cls in _CLASSES for head in cls.SPECS}
_BY_NAME = {cls.NAME: cls for cls in _CLASSES}

BACKENDS: tuple[str, ...] = tuple(_BY_HEAD)

__all__ = ["BACKENDS", "IndexInputError", "VectorIndex", "describe_specs", "load_index", "make_index"]


def describe_specs() -> str:
    """Help text listing every accepted spec name with its parameters and defaults."""
    lines = ["Index specs: NAME or NAME:key=value,...  (raw FAISS: faiss:FACTORY?key=value,...)",
             f"  {AUTO_SPEC:<7} collections only, the default: exact search up to {exact_limit(1280):,} items "
             f"at 1280-d, then {ANN_SPEC}"]
    for head, cls in _BY_HEAD.items():
        lines.append(f"  {head:<7} {cls.SPECS[head]}")
        params = [f"{k}={'' if p.default is None else p.default}{'*' if p.search else ''}"
                  for k, p in cls.schema_for(head).items()]
        if params:
            lines.append(f"          {', '.join(params)}")
    lines.append("  (* search-time parameter: can be changed after building or loading with set_params)")
    return "\n".join(lines)


def make_index(spec: str, dim: int) -> VectorIndex:
    """A new, empty index for ``dim``-dimensional vectors as described by ``spec``."""
    head, _, body = str(spec).strip().partition(":")
    head = head.strip().lower()
    try:
        if head not in _BY_HEAD:
            raise IndexSpecError(f"unknown index backend {head!r}")
        return _BY_HEAD[head].create(head, body, dim)
    except IndexSpecError as error:
        raise IndexSpecError(f"bad index spec {spec!r}: {error}\n{describe_specs()}") from None


def load_index(directory: Path, mmap: bool = False) -> VectorIndex:
    """The index saved in ``directory`` (by ``VectorIndex.save``); ``mmap``: its float32 vectors
    stay in the file, mapped, and only the rows a query re-scores are read."""
    backend = read_meta(Path(directory)).get("backend")
    if backend not in _BY_NAME:
        raise VestisError(f"{directory} holds an index of unknown backend {backend!r} "
                          f"(known: {', '.join(_BY_NAME)})")
    return _BY_NAME[backend].load(Path(directory), mmap)

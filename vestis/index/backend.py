"""The public interface of the index backends: spec parameters, input checks, exact re-scoring,
``Backend`` (what every backend is) and ``StructuredIndex``, the base of every approximate backend
(exact search and top-k: :mod:`vestis.index.topk`). Vectors live in a :class:`vestis.index.vectors.VectorStore`.

``StructuredIndex`` keeps the exact vectors in a ``VectorStore`` and an approximate structure
(FAISS index, Annoy forest, KD-tree, k-means lists) over store rows ``[0, built)``:

* rows appended since the build form an exact *delta*: backends whose structure can grow (FAISS,
  k-means) absorb it on the next search, the others (Annoy, KD-tree) search it by brute force and
  are rebuilt once it exceeds ``DELTA_FRACTION`` of the built rows;
* removed rows are *tombstones*, filtered out of the results (the structure is asked for extra
  candidates); store and structure are compacted and rebuilt once tombstones exceed
  ``DEAD_FRACTION`` of the rows;
* trainable structures (IVF, PQ, k-means) are built once ``min_rows`` vectors exist (until then
  search is exact) and retrained when the live vectors have grown ``RETRAIN_GROWTH``-fold since;
* every candidate is re-scored exactly against the stored vectors, so scores are true inner
  products whatever the structure (PQ and LSH codes, Annoy angular or KD-tree euclidean distances);
* a result row that ends up with fewer than ``k`` live hits while the index holds at least ``k``
  (tombstones, a sparse IVF probe) is completed by exact search, so padding with ``-inf`` / ``-1``
  only ever means "fewer than k vectors exist".

All of this happens lazily, on ``search``, ``save`` or an explicit ``build()``, so adding many
batches costs no rebuilds. Not thread-safe: callers serialise writes and searches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vestis.errors import IndexSpecError, VestisError
from vestis.index.base import VectorIndex
from vestis.index.topk import exact_search, merge_topk
from vestis.index.vectors import VectorStore

FORMAT_VERSION = 1
META_FILE = "index.json"
NORM_TOLERANCE = 1e-3

DELTA_FRACTION = 0.1
DEAD_FRACTION = 0.2
RETRAIN_GROWTH = 2.0


class IndexInputError(VestisError, ValueError):
    """Vectors, ids, queries or k that do not fit the index (wrong shape, dimension, norm)."""


# --- spec parameters -------------------------------------------------------------------------

AUTO = "auto"


@dataclass(frozen=True)
class Param:
    """One ``key=value`` of a spec: integer (or ``auto`` where allowed; ``None`` = unset)."""

    default: int | str | None
    minimum: int = 0
    search: bool = False  # may be changed after build with ``set_params``
    auto: bool = False  # accepts the value ``auto`` (resolved from the data at build time)


Params = dict[str, int | str | None]


def _convert(name: str, raw: Any, p: Param) -> int | str:
    text = str(raw).strip()
    if p.auto and text.lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        value = None
    if isinstance(raw, bool) or value is None or value < p.minimum:
        expected = f"an integer >= {p.minimum}" + (" or 'auto'" if p.auto else "")
        raise IndexSpecError(f"parameter {name}={raw!r} must be {expected}")
    return value


def _canonical(schema: dict[str, Param], key: str, where: str) -> str:
    names = {k.lower(): k for k in schema}
    if key.strip().lower() not in names:
        accepted = ", ".join(schema) or "none"
        raise IndexSpecError(f"unknown parameter {key.strip()!r} for {where} (accepted: {accepted})")
    return names[key.strip().lower()]


def parse_params(text: str, schema: dict[str, Param], where: str) -> Params:
    """``"a=1,b=auto"`` -> a full parameter dict (defaults filled in), validated against ``schema``."""
    values: Params = {k: p.default for k, p in schema.items()}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or not raw.strip():
            raise IndexSpecError(f"{where}: expected key=value, got {item!r}")
        name = _canonical(schema, key, where)
        values[name] = _convert(name, raw, schema[name])
    return values


def format_params(params: Params) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items() if v is not None)


# --- input checks ----------------------------------------------------------------------------


def check_vectors(ids: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated (int64 ids, C-contiguous float32 unit vectors)."""
    ids = np.asarray(ids)
    vectors = np.asarray(vectors)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise IndexInputError(f"ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise IndexInputError(f"vectors must have shape (N, {dim}), got {vectors.shape}")
    if len(ids) != len(vectors):
        raise IndexInputError(f"{len(ids)} ids for {len(vectors)} vectors")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and ids.min() < 0:
        raise IndexInputError("ids must be non-negative (-1 marks padding in results)")
    if np.unique(ids).size != ids.size:
        raise IndexInputError("the same id appears twice in one add() call")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    bad = ~(np.abs(norms - 1.0) <= NORM_TOLERANCE)  # also catches NaN / inf
    if bad.any():
        raise IndexInputError(
            f"{int(bad.sum())} vectors are not L2-normalised (e.g. norm {norms[bad][0]:.4g}); "
            "divide each by its norm before adding")
    return ids, vectors


def check_queries(queries: np.ndarray, dim: int, k: int, finite: bool = True) -> np.ndarray:
    """Queries as a C-contiguous float32 (Q, dim) array; a single 1-D query becomes one row.
    ``finite=False`` leaves out the check for NaN and infinite values, for a caller that can tell
    them from its answer instead (a pass over the query costs more than the rest of a warm check)."""
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise IndexInputError(f"queries must have shape (Q, {dim}) or ({dim},), got {np.shape(queries)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise IndexInputError(f"k must be a positive integer, got {k!r}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if finite and not np.isfinite(q).all():
        raise IndexInputError("queries contain NaN or infinite values")
    return q


# --- persistence -----------------------------------------------------------------------------


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / META_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2) + "\n")


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise VestisError(f"no saved index at {directory} ({META_FILE} is missing)") from None
    except json.JSONDecodeError as e:
        raise VestisError(f"{path} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise VestisError(f"{path} has index format {meta.get('format')!r}; "
                          f"this vestis reads format {FORMAT_VERSION}")
    return meta


# --- backends --------------------------------------------------------------------------------


class Backend(VectorIndex):
    """Spec handling shared by all backends: ``name:params`` -> parameters, ``spec``,
    ``set_params`` for search-time parameters, ``info``."""

    NAME: ClassVar[str]  # backend name written to index.json
    SPECS: ClassVar[dict[str, str]]  # spec heads this class accepts -> one-line summary

    def __init__(self, dim: int, head: str, schema: dict[str, Param], params: Params) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise IndexInputError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.head = head
        self.schema = schema
        self.params = params

    @classmethod
    def schema_for(cls, head: str) -> dict[str, Param]:
        """The parameters that the spec head ``head`` accepts."""
        return {}

    @classmethod
    def create(cls, head: str, body: str, dim: int) -> Backend:
        """Build from a parsed spec ``head[:body]``."""
        schema = cls.schema_for(head)
        return cls(dim, head, schema, parse_params(body, schema, head))

    @property
    def spec(self) -> str:
        body = format_params(self.params)
        return f"{self.head}:{body}" if body else self.head

    def set_params(self, **values: int | str) -> None:
        """Change search-time parameters (e.g. ``nprobe``, ``efSearch``, ``search_k``, ``probe``)."""
        searchable = [k for k, p in self.schema.items() if p.search]
        new = dict(self.params)
        for key, raw in values.items():
            name = _canonical(self.schema, key, self.head)
            if not self.schema[name].search:
                raise IndexSpecError(f"{name} is fixed when {self.head} is built; search-time parameters: "
                                     f"{', '.join(searchable) or 'none'}")
            new[name] = _convert(name, raw, self.schema[name])
        old, self.params = self.params, new
        try:
            self._apply_search_params()
        except IndexSpecError:
            self.params = old
            self._apply_search_params()
            raise

    def _apply_search_params(self) -> None:
        """Push ``self.params`` search-time values into the built structure."""

    def info(self) -> dict[str, Any]:
        """Backend, spec and counts, as written to index.json."""
        return {"backend": self.NAME, "spec": self.spec, "dim": self.dim, "count": len(self)}

    @classmethod
    def _from_meta(cls, directory: Path) -> tuple[Backend, dict[str, Any]]:
        meta = read_meta(directory)
        if meta.get("backend") != cls.NAME:
            raise VestisError(f"{directory} holds a {meta.get('backend')!r} index, not {cls.NAME!r}")
        head, _, body = meta["spec"].partition(":")
        return cls.create(head, body, int(meta["dim"])), meta


class StructuredIndex(Backend):
    """An approximate structure over a ``VectorStore`` with exact delta and tombstones (see the
    module docstring for the rules). Subclasses implement ``_build``, ``_candidates`` and, when the
    structure can grow, ``_extend``; plus ``_save_structure`` / ``_load_structure``."""

    extendable: ClassVar[bool] = False  # the structure can take new rows without a rebuild
    trainable: bool = False  # retrain on growth (instances may decide, e.g. FAISS IVF vs HNSW)

    def __init__(self, dim: int, head: str, schema: dict[str, Param], params: Params) -> None:
        super().__init__(dim, head, schema, params)
        self._store = VectorStore(self.dim)
        self._built = 0  # rows [0, built) are in the structure
        self._dead_built = 0  # tombstones among them
        self._trained_rows = 0  # rows at the last full build

    # -- to implement
    def _min_rows(self) -> int:
        """Rows needed before the structure is built (exact search until then)."""
        return 1

    def _build(self) -> None:
        """Build the structure over every store row (the store has just been compacted)."""
        raise NotImplementedError

    def _extend(self, start: int) -> None:
        """Add store rows [start, n_rows) to the structure (only when ``extendable``)."""
        raise NotImplementedError

    def _drop(self) -> None:
        """Forget the structure."""

    def _candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(Q, k) store rows from the structure, best first, -1 padded; may include dead rows."""
        raise NotImplementedError

    def _save_structure(self, directory: Path) -> dict[str, Any]:
        """Write the structure; return extra fields for index.json."""
        return {}

    def _load_structure(self, directory: Path, meta: dict[str, Any]) -> bool:
        """Read the structure written by ``_save_structure``; False if it must be rebuilt."""
        return False

    def _k_factor(self) -> int:
        """How many candidates per wanted result to fetch from the structure before re-scoring."""
        return 1

    # -- VectorIndex
    def __len__(self) -> int:
        return self._store.n_alive

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_vectors(ids, vectors, self.dim)
        self._kill(ids)
        self._store.append(ids, vectors)

    def remove(self, ids: np.ndarray) -> int:
        return self._kill(np.asarray(ids, dtype=np.int64).reshape(-1))

    def _kill(self, ids: np.ndarray) -> int:
        rows = self._store.kill(ids)
        self._dead_built += int((rows < self._built).sum())
        return len(rows)

    def build(self) -> None:
        """Bring the structure up to date now; ``search`` and ``save`` otherwise do it lazily."""
        st = self._store
        if st.n_dead > DEAD_FRACTION * st.n_rows or self._built == 0:
            self._rebuild()
        elif st.n_rows > self._built:
            if self.trainable and st.n_alive >= RETRAIN_GROWTH * self._trained_rows:
                self._rebuild()
            elif self.extendable:
                self._extend(self._built)
                self._dead_built += int((~st.alive[self._built:]).sum())
                self._built = st.n_rows
            elif st.n_rows - self._built > DELTA_FRACTION * self._built:
                self._rebuild()

    def _rebuild(self) -> None:
        self._store.compact()
        self._drop()
        self._built = self._dead_built = 0
        if self._store.n_rows >= self._min_rows():
            self._build()
            self._built = self._trained_rows = self._store.n_rows
            self._apply_search_params()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_queries(queries, self.dim, k)
        self.build()
        st, built = self._store, self._built
        if len(q) == 0 or st.n_alive == 0:
            return exact_search(q, st.vectors[:0], k)
        scores, rows = [], []  # candidates from the structure and from the delta, merged below
        if built:
            want = min(built, k * self._k_factor())
            cand = self._candidates(q, min(built, want + min(self._dead_built, want)))
            live = (cand >= 0) & st.alive[np.maximum(cand, 0)]
            first = np.argsort(~live, axis=1, kind="stable")  # the live candidates first, in their order
            cand = np.where(np.take_along_axis(live, first, axis=1), np.take_along_axis(cand, first, axis=1), -1)
            s, r = st.best_of(q, cand, k)
            scores.append(np.where(r >= 0, s, np.float32(-np.inf)))
            rows.append(r)
        if st.n_rows > built:
            s, r = exact_search(q, st.vectors[built:], k, alive=st.alive[built:])
            scores.append(s)
            rows.append(np.where(r >= 0, r + built, -1))
        top_s, top_r = merge_topk(scores, rows, k)
        short = np.flatnonzero((top_r >= 0).sum(axis=1) < min(k, st.n_alive))
        if short.size:
            top_s[short], top_r[short] = exact_search(q[short], st.vectors, k, alive=st.alive)
        return top_s, st.labels(top_r)

    def info(self) -> dict[str, Any]:
        st = self._store
        return {**super().info(), "rows": st.n_rows, "built": self._built,
                "trained_rows": self._trained_rows, "tombstones": st.n_dead}

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self.build()
        self._store.save(directory)
        extra = self._save_structure(directory) if self._built else {}
        write_meta(directory, {**self.info(), **extra})

    @classmethod
    def load(cls, directory: Path, mmap: bool = False) -> StructuredIndex:
        directory = Path(directory)
        index, meta = cls._from_meta(directory)
        index._store = VectorStore.load(directory, index.dim, mmap)
        if meta["built"] and index._load_structure(directory, meta):
            index._built, index._trained_rows = int(meta["built"]), int(meta["trained_rows"])
            index._dead_built = int((~index._store.alive[:index._built]).sum())
            index._apply_search_params()
        return index

"""Automatic index choice: the ``auto`` spec of a collection.

Exact search costs one pass over every stored float32 vector per query (memory-bandwidth bound),
so ``auto`` keeps it while that scan stays below ``EXACT_MAX_BYTES`` (a few milliseconds on the
2-core reference machine; BENCHMARKS.md) and switches to ``ANN_SPEC`` above: an HNSW graph (M=32) over 8-bit scalar-
quantised vectors whose 2k best candidates are re-scored exactly. In ``vestis bench ann`` it reached
recall@10 >= 0.95 on the real Fashion Product Images embeddings and on generated sets of 139,709
and 1,000,000 vectors, as fast as HNSW over float32 vectors with a third less memory and half the
build time (BENCHMARKS.md, "Search speed"). New vectors join the graph without a rebuild; the
quantiser is retrained (a rebuild) when the collection has doubled since. A collection that
shrinks goes back to exact search below half the threshold, so one that hovers around it does not
rebuild each time.
"""

from __future__ import annotations

AUTO_SPEC = "auto"
EXACT_SPEC = "exact"
EXACT_MAX_BYTES = 64 << 20  # float32 bytes an exact query may scan: 13,107 vectors at 1280-d
ANN_SPEC = "faiss:HNSW32,SQ8?efSearch=64,k_factor=2"


def is_auto(spec: str | None) -> bool:
    return str(spec).strip().lower() == AUTO_SPEC


def exact_limit(dim: int, max_bytes: int | None = None) -> int:
    """The largest collection (items) that ``auto`` searches exactly at dimension ``dim``."""
    return max(1, (EXACT_MAX_BYTES if max_bytes is None else max_bytes) // (4 * dim))


def choose_index(n: int, dim: int, current: str | None = None, max_bytes: int | None = None) -> str:
    """The spec ``auto`` uses for ``n`` vectors of dimension ``dim``; ``current`` is the spec in use,
    kept when ``n`` is between half the threshold and the threshold (hysteresis). ``max_bytes``:
    the scan an exact query may afford (less where a query does more than one search)."""
    limit = exact_limit(dim, max_bytes)
    if n > limit:
        return ANN_SPEC
    if current == ANN_SPEC and n > limit // 2:
        return ANN_SPEC
    return EXACT_SPEC


def concrete_spec(spec: str, n: int, dim: int, current: str | None = None) -> str:
    """``spec`` itself, or what ``auto`` resolves to for ``n`` vectors."""
    return choose_index(n, dim, current) if is_auto(spec) else spec


def describe_choice(dim: int) -> str:
    """One line for ``vestis info``: the rule ``auto`` follows at this dimension."""
    return f"auto: exact up to {exact_limit(dim):,} items at dim {dim}, then {ANN_SPEC}"

"""Many queries ranked by Milvus: ``SEARCH_BATCH`` queries a request, each query's excluded vids
dropped from its hits, colour fused over the deep search's best candidates (as the local ANN path
re-scores them), the best ``want`` kept by the one top-k kernel (equal scores: Milvus's order)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vestis.index.topk import topk
from vestis.store.milvus.items import ItemRows

SEARCH_BATCH = 256  # queries per search request


def search_rows(rows: ItemRows, vectors: np.ndarray, want: int, fetch: int, expr: str, params: dict[str, Any],
                exclude: np.ndarray, colours: np.ndarray | None, colour_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(vids, scores) Q x want, padded with -1 / -inf: each query's ``fetch`` best items matching
    ``expr``, less its ``exclude`` row of vids (-1 padded)."""
    out_v = np.full((len(vectors), want), -1, np.int64)
    out_s = np.full((len(vectors), want), -np.inf, np.float32)
    for q0 in range(0, len(vectors), SEARCH_BATCH):
        batch = np.asarray(vectors[q0:q0 + SEARCH_BATCH], np.float32)
        found = rows.search(batch.tolist(), fetch, expr, ["vid"], params, colour=bool(colour_weight))
        vids = np.full((len(batch), fetch), -1, np.int64)
        scores = np.full((len(batch), fetch), -np.inf, np.float32)
        for i, hits in enumerate(found):
            vids[i, :len(hits)] = [int(h["entity"]["vid"]) for h in hits]
            scores[i, :len(hits)] = [float(h["distance"]) for h in hits]
            if colour_weight and hits:
                fused = np.asarray([h["entity"]["colour"] for h in hits], np.float32) @ colours[q0 + i]
                scores[i, :len(hits)] += colour_weight * fused
        left_out = (vids[:, :, None] == exclude[q0:q0 + len(batch), None, :]).any(axis=2) | (vids < 0)
        top_s, cols = topk(np.where(left_out, -np.inf, scores), want)
        out_s[q0:q0 + len(batch)] = top_s
        out_v[q0:q0 + len(batch)] = np.where(cols >= 0, np.take_along_axis(vids, np.maximum(cols, 0), axis=1), -1)
    return out_v, out_s

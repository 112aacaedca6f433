"""The attribute model's embeddings of items and its test: attribute MAP against the backbone."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vestis.errors import VestisError
from vestis.eval.protocols import attribute_map
from vestis.train.attributes.embedder import AttributeEmbedder
from vestis.train.attributes.features import AttributeData, RowView


@torch.no_grad()
def embed_items(
    head: AttributeEmbedder,
    maps: np.ndarray | RowView,
    global_vecs: np.ndarray | RowView | None,
    rows: np.ndarray,
    batch_size: int = 256,
) -> np.ndarray:
    """Every attribute's embedding of the items at ``rows``: len(rows) x A x dim float32."""
    head.eval()
    device = head.project.weight.device
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        glob = None if global_vecs is None else torch.from_numpy(np.asarray(global_vecs[chunk], np.float32))
        maps_chunk = torch.from_numpy(np.asarray(maps[chunk], np.float32)).to(device)
        out.append(head.all_attributes(maps_chunk, None if glob is None else glob.to(device)).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, head.n_attributes, head.dim), np.float32)


def evaluate_attribute_map(
    data: AttributeData, item_split: np.ndarray, head: AttributeEmbedder, global_branch: bool
) -> dict[str, Any]:
    """Attribute MAP (ASEN / RPF protocol, full ranking within the test items) of the model and of
    the backbone's global embedding."""
    test = np.flatnonzero(item_split.astype(str) == "test")
    if len(test) == 0:
        raise VestisError("the test split is empty")
    metadata = [data.items.metadata[i] for i in test]
    present = [a for a in data.attributes if any(a in m for m in metadata)]
    emb = embed_items(head, data.maps, data.global_vecs if global_branch else None, test)
    per_attribute = {a: emb[:, data.attributes.index(a)] for a in present}
    baseline = np.asarray(data.global_vecs[test], np.float32)
    baseline /= np.maximum(np.linalg.norm(baseline, axis=1, keepdims=True), 1e-12)
    return {
        "model": attribute_map(per_attribute, metadata, present),
        "global_features": attribute_map(baseline, metadata, present),
    }

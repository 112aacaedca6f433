"""KD-tree backend: scikit-learn's ``KDTree`` over the unit vectors with euclidean distance.

For unit vectors ``|a - b|**2 = 2 - 2 cos``, so nearest in euclidean distance is most similar by
cosine, and the tree's answers are exact. KD-trees pay off in low dimensions (up to a few dozen);
with image embeddings (hundreds of dimensions) they visit most leaves. The tree is immutable:
like Annoy, additions are searched exactly until they exceed 10% of the tree and removals are
tombstones (see ``StructuredIndex``). The tree is not written to disk (that would mean a pickle);
``load`` rebuilds it from the saved vectors on first use, which gives the same exact answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from vestis.index.backend import Param, StructuredIndex

if TYPE_CHECKING:
    from sklearn.neighbors import KDTree

PARAMS = {"leaf_size": Param(40, 1)}


class KDTreeIndex(StructuredIndex):
    NAME = "kdtree"
    SPECS: ClassVar[dict[str, str]] = {
        "kdtree": "scikit-learn KD-tree, euclidean on unit vectors (exact; for low dimensions)"}
    _tree: KDTree | None = None

    @classmethod
    def schema_for(cls, head: str) -> dict:
        return PARAMS

    def _build(self) -> None:
        from sklearn.neighbors import KDTree  # scikit-learn takes longer to import than a small search

        self._tree = KDTree(self._store.vectors, leaf_size=int(self.params["leaf_size"]))

    def _drop(self) -> None:
        self._tree = None

    def _candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        return self._tree.query(queries, k=k, return_distance=False).astype(np.int64, copy=False)

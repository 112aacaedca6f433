"""Annoy backend: a forest of random-projection trees with the angular metric.

Annoy forests are immutable once built and number items 0..n-1, so the forest indexes store rows
``[0, built)`` and the machinery of ``StructuredIndex`` handles change: vectors added since the
build are searched exactly (the delta) and the forest is rebuilt lazily once they exceed 10% of
it; removals are tombstones until they exceed 20% of the rows. Candidates are re-scored exactly
(for unit vectors Annoy's angular distance is ``d = sqrt(2 - 2 cos)``, so ``cos = 1 - d**2 / 2``;
re-scoring gives the same value without float rounding). Annoy has no batch query, so a batch
is one C call per query. ``jobs=1`` keeps builds reproducible for a seed; ``jobs=-1`` builds the
trees on all cores (faster, but the forest then depends on thread timing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import annoy
import numpy as np

from vestis.errors import IndexSpecError
from vestis.index.backend import Param, Params, StructuredIndex

PARAMS = {"trees": Param(50, 1), "search_k": Param(-1, -1, search=True), "jobs": Param(1, -1),
          "seed": Param(0)}


class AnnoyIndex(StructuredIndex):
    NAME = "annoy"
    SPECS: ClassVar[dict[str, str]] = {
        "annoy": "Annoy random-projection forest, angular (search_k=-1: trees * k)"}

    def __init__(self, dim: int, head: str, schema: dict[str, Param], params: Params) -> None:
        super().__init__(dim, head, schema, params)
        if params["jobs"] == 0:
            raise IndexSpecError("annoy jobs must be a number of threads, or -1 for all cores")
        self._forest: annoy.AnnoyIndex | None = None

    @classmethod
    def schema_for(cls, head: str) -> dict[str, Param]:
        return PARAMS

    def _new_forest(self) -> annoy.AnnoyIndex:
        forest = annoy.AnnoyIndex(self.dim, "angular")
        forest.set_seed(int(self.params["seed"]))
        return forest

    def _build(self) -> None:
        forest = self._new_forest()
        for row, vector in enumerate(self._store.vectors):
            forest.add_item(row, vector)
        forest.build(int(self.params["trees"]), n_jobs=int(self.params["jobs"]))
        self._forest = forest

    def _drop(self) -> None:
        self._forest = None

    def _candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        out = np.full((len(queries), k), -1, np.int64)
        search_k = int(self.params["search_k"])
        for i, query in enumerate(queries):
            hits = self._forest.get_nns_by_vector(query, k, search_k)
            out[i, :len(hits)] = hits
        return out

    def _save_structure(self, directory: Path) -> dict[str, Any]:
        self._forest.save(str(directory / "forest.ann"))  # Annoy then memory-maps the saved file
        return {}

    def _load_structure(self, directory: Path, meta: dict[str, Any]) -> bool:
        self._forest = self._new_forest()
        self._forest.load(str(directory / "forest.ann"))
        return True

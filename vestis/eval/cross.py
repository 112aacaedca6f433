"""Evaluation across collections: one collection's items as queries, another collection as the
gallery (street to shop: photos of people wearing clothes against a catalogue).

Each query item's image is searched in the gallery through :meth:`Engine.run
<vestis.search.engine.Engine.run>`, the read path users hit (the gallery's encoder, index,
filters, garment regions and their catalogue scopes), as the whole photo and, with ``region``, as
that garment region too; a photo in which the region is not found is searched whole for it.
Relevance comes from a :class:`LabelMap` file: which gallery label values match each query label
value. Reported per mode: P@K, R@K (at least one relevant item in the top K, the In-shop
"hit@K") and mAP@K, and for the region the change of P@10 and mAP@10 against the whole photo with
its 95 % interval over the queries (as ``vestis train`` reports changes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vestis.data.sources import read_source
from vestis.errors import VestisError
from vestis.eval.metrics import average_precision_at_k, change_interval, precision_at_k, retrieval_metrics
from vestis.search.engine import Engine
from vestis.search.query import SearchQuery
from vestis.search.regions import NoRegionError
from vestis.store.factory import open_collection

MAX_MAP_BYTES = 1 << 20  # a label map is a small hand-written file


@dataclass(frozen=True)
class LabelMap:
    """query column -> (gallery column, query value -> the gallery values that match it); a query
    needs a value in each ``required`` column to be asked (see the shipped maps' headers)."""

    columns: Mapping[str, tuple[str, Mapping[str, frozenset[str]]]]
    required: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> LabelMap:
        import yaml

        if not path.is_file():
            raise VestisError(f"no label map at {path}")
        if path.stat().st_size > MAX_MAP_BYTES:
            raise VestisError(f"{path} is over {MAX_MAP_BYTES:,} bytes: not a label map")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise VestisError(f"{path} is not a readable YAML label map: {e}") from None
        try:
            columns = {str(q): (str(spec["gallery"]), {str(v): frozenset(map(str, g)) for v, g in spec["values"].items()})
                       for q, spec in raw["columns"].items()}
        except (KeyError, TypeError, AttributeError) as e:
            raise VestisError(f"{path}: a label map has 'columns: {{QUERY_COLUMN: {{gallery: COLUMN, values: "
                              f"{{VALUE: [GALLERY VALUES]}}}}}}' ({type(e).__name__}: {e})") from None
        required = tuple(map(str, raw.get("require", list(columns))))
        unknown = [c for c in required if c not in columns]
        if not columns or unknown:
            raise VestisError(f"{path}: no columns, or 'require' names columns it does not map: {unknown}")
        return cls(columns, required)

    def asks(self, metadata: Mapping[str, Any]) -> bool:
        return all(metadata.get(c) not in (None, "") for c in self.required)

    def relevant(self, metadata: Mapping[str, Any], gallery: Mapping[str, np.ndarray]) -> np.ndarray:
        """Which gallery items (``gallery``: column -> values, in gallery order) match the query."""
        return self.relevance([metadata], gallery)[0]

    def relevance(self, queries: Sequence[Mapping[str, Any]], gallery: Mapping[str, np.ndarray]) -> np.ndarray:
        """:meth:`relevant` for many queries at once: a queries x gallery boolean matrix. Each
        (column, value) is matched against the gallery once, so a few thousand queries with a few
        label values each cost a few gallery scans."""
        n = len(next(iter(gallery.values()))) if gallery else 0
        masks: dict[tuple[str, str], np.ndarray] = {}
        out = np.ones((len(queries), n), bool)
        for qi, metadata in enumerate(queries):
            for column, (gallery_column, values) in self.columns.items():
                value = metadata.get(column)
                if value in (None, ""):
                    continue  # the annotators did not agree: no constraint
                key = (column, str(value))
                if key not in masks:
                    masks[key] = np.isin(gallery[gallery_column], list(values.get(str(value), ())))
                out[qi] &= masks[key]
        return out


@dataclass
class CrossConfig:
    label_map: Path
    region: str = "none"  # also search this garment region of each query photo (auto is not a ranking)
    region_scope: bool = True
    ks: Sequence[int] = (1, 10, 50)
    limit: int | None = None  # the first N askable queries only


def evaluate_across(gallery_location: Path | str, queries_location: Path | str, cfg: CrossConfig,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The figures of the module docstring, as a dict (``whole`` and, with a region, ``region``)."""
    if cfg.region == "auto":
        raise VestisError("evaluate one region at a time (top, bottom, shoes or person), not auto")
    label_map = LabelMap.load(cfg.label_map)
    with open_collection(queries_location) as query_collection:
        queries = [it for it in query_collection.iter_items() if label_map.asks(it.metadata)]
    queries = queries[:cfg.limit] if cfg.limit else queries
    if not queries:
        raise VestisError(f"no item of {queries_location} has a value in {', '.join(label_map.required)}")
    depth = max(cfg.ks)
    modes = ["none"] + ([cfg.region] if cfg.region != "none" else [])
    with Engine.open(gallery_location) as engine:
        items = list(engine.collection.iter_items())
        position = {it.id: i for i, it in enumerate(items)}
        columns = {g for g, _ in label_map.columns.values()}
        gallery = {c: np.array([str(it.metadata.get(c, "")) for it in items]) for c in columns}
        rankings = {mode: np.full((len(queries), depth), -1, np.int64) for mode in modes}
        relevant_counts = np.zeros(len(queries), np.int64)
        masks = []
        whole_fallback, seconds = 0, {mode: [] for mode in modes}
        for qi, item in enumerate(queries):
            data = read_source(item.source)
            whole: list = []
            for mode in modes:  # "none" first: its hits stand in for a region the photo lacks
                t0 = time.perf_counter()
                query = SearchQuery(image=data, image_name=item.id, region=mode, region_scope=cfg.region_scope,
                                    k=depth)
                try:
                    hits = engine.run(query).response.hits
                except NoRegionError:  # no such region in this photo: it is searched whole
                    whole_fallback += 1
                    hits = whole
                seconds[mode].append(time.perf_counter() - t0)
                whole = hits if mode == "none" else whole
                rankings[mode][qi, :len(hits)] = [position[h.id] for h in hits]
            mask = label_map.relevant(item.metadata, gallery)
            masks.append(mask)
            relevant_counts[qi] = mask.sum()
            if progress is not None:
                progress(qi + 1, len(queries))
    out: dict[str, Any] = {"n_queries": len(queries), "n_gallery": len(items), "label_map": str(cfg.label_map),
                           "region_scope": cfg.region_scope}
    per_query: dict[str, dict[str, np.ndarray]] = {}
    for mode in modes:
        ranking = rankings[mode]
        rel = np.array([np.where(ranking[qi] >= 0, masks[qi][np.maximum(ranking[qi], 0)], False)
                        for qi in range(len(queries))])
        name = "whole" if mode == "none" else mode
        out[name] = {**retrieval_metrics(rel, relevant_counts, cfg.ks, include_queries_without_relevant=True),
                     "query_ms_p50": round(1000 * float(np.median(seconds[mode])), 2)}
        per_query[name] = {"mAP@10": np.nan_to_num(average_precision_at_k(rel, relevant_counts, 10)),
                           "P@10": precision_at_k(rel, 10)}
    if cfg.region != "none":
        out["searched_whole"] = whole_fallback
        for metric in ("P@10", "mAP@10"):
            region, whole = per_query[cfg.region][metric], per_query["whole"][metric]
            low, high = change_interval(region, whole)
            out[f"{metric}_change"] = float(region.mean() / whole.mean() - 1) if whole.mean() else float("nan")
            out[f"{metric}_change_ci95"] = [low, high]
    return out

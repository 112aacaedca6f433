"""Evaluate a collection (what ``vestis eval`` runs): pick queries and gallery by split, rank them
through the store's own search, score with the protocols, and write a report.

The queries are the stored vectors of the query items, asked of the store in one batch
(``search_batch``: the read path of every search, with the gallery as the allowed items, each
query left out of its own results and colour fused as searches fuse it). ``index`` picks the
ranking: ``exact`` (the store's exact scan, the default), ``collection`` (the collection's own
ANN index, as its searches use it) or a spec, built from the stored vectors as ``vestis index
--index SPEC`` builds it; any but exact also reports ANN recall@10 against the exact ranking.

Queries and gallery come from a split: the items' own ``split`` metadata (Fashion-MNIST,
DeepFashion), a CSV given with ``split_file``, or a deterministic split by id stratified by the
group columns (seed 0, 80/10/10), created once and saved in the collection's ``splits/`` folder so
that training and evaluation use the same one. When a query is also in the gallery it is never
counted as its own result (leave-one-out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.eval.metrics import ann_recall_at_k
from vestis.index.auto import EXACT_SPEC
from vestis.eval.protocols import (
    attribute_map,
    group_labels,
    knn_from_ranking,
    load_split,
    relevance,
    save_split,
    score_ranking,
    split_by_id,
)
from vestis.eval.report import write_report
from vestis.search.grid import contact_sheet, key_labels, load_source_image
from vestis.store.db import Item
from vestis.store.factory import open_collection
from vestis.store.protocol import CollectionStore

COLLECTION_INDEX = "collection"  # --index: the collection's own index, the one its searches use


@dataclass
class EvalConfig:
    group: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    ks: list[int] = field(default_factory=lambda: [1, 10, 50])
    queries: str | None = None  # split name of the queries (None: every item)
    gallery: list[str] | None = None  # split names of the gallery (None: every item)
    split_file: Path | None = None
    index: str = EXACT_SPEC  # exact, "collection" (its own index, as searches use) or a spec built for the run
    colour_weight: float = 0.0
    knn: int | None = None  # also report kNN classification accuracy with this K
    include_queries_without_relevant: bool = True
    seed: int = 0


def load_items(collection: CollectionStore) -> tuple[list[Item], np.ndarray, np.ndarray]:
    """Items in vid order with their vectors and colour descriptors (same order)."""
    items = list(collection.iter_items())
    vids, vectors, colours = collection.table().view
    order = np.argsort(vids)
    if not np.array_equal(vids[order], [it.vid for it in items]):
        raise VestisError("collection table and items disagree; re-run `vestis index`")
    return items, vectors[order], colours[order]


def resolve_split(collection: CollectionStore, items: list[Item], cfg: EvalConfig) -> dict[str, str]:
    """id -> split name, from a file, the items' metadata, or a saved/created stratified split."""
    if cfg.split_file is not None:
        return load_split(cfg.split_file)
    if all("split" in it.metadata for it in items):
        return {it.id: it.metadata["split"] for it in items}
    name = "-".join(cfg.group or cfg.attributes or ["all"]).replace("/", "_")
    path = collection.path / "splits" / f"{name}-seed{cfg.seed}.csv"
    if path.exists():
        return load_split(path)
    groups = group_labels([it.metadata for it in items], cfg.group) if cfg.group else [None] * len(items)
    mapping = split_by_id([it.id for it in items], list(groups), seed=cfg.seed)
    path.parent.mkdir(exist_ok=True)
    save_split(path, mapping)
    return mapping


def evaluate_collection(collection: CollectionStore, cfg: EvalConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (metrics, context for the report: items, rankings and labels of the queries)."""
    if not cfg.group and not cfg.attributes:
        raise VestisError("name the label columns to evaluate: --group COLS and/or --attributes A,B")
    items, vectors, colours = load_items(collection)
    splits = resolve_split(collection, items, cfg) if (cfg.queries or cfg.gallery) else {}
    in_split = lambda names: np.array([splits.get(it.id) in names for it in items])  # noqa: E731
    q_rows = np.flatnonzero(in_split({cfg.queries})) if cfg.queries else np.arange(len(items))
    g_rows = np.flatnonzero(in_split(set(cfg.gallery))) if cfg.gallery else np.arange(len(items))
    if len(q_rows) == 0 or len(g_rows) == 0:
        raise VestisError(f"no items in the query split {cfg.queries!r} or gallery {cfg.gallery!r}")
    metrics: dict[str, Any] = {
        "n_items": len(items), "n_queries_total": len(q_rows), "n_gallery": len(g_rows),
        "queries": cfg.queries or "all", "gallery": ",".join(cfg.gallery) if cfg.gallery else "all",
    }
    context: dict[str, Any] = {"items": items, "q_rows": q_rows, "g_rows": g_rows}
    if cfg.group:
        labels = group_labels([it.metadata for it in items], cfg.group)
        pos_in_gallery = np.full(len(items), -1, np.int64)
        pos_in_gallery[g_rows] = np.arange(len(g_rows))
        exclude = pos_in_gallery[q_rows]
        depth = max(*cfg.ks, 10, cfg.knn or 0)  # ANN recall is @10
        search = _searcher(collection, items, vectors[q_rows], colours[q_rows], q_rows, g_rows, cfg)
        index = cfg.index if cfg.index != COLLECTION_INDEX else collection.active_index_spec
        scores, ranking = search(index, depth)
        metrics["index"] = index
        if index != EXACT_SPEC:
            metrics["ann_recall@10"] = ann_recall_at_k(ranking, search(EXACT_SPEC, depth)[1], 10)
        metrics.update(score_ranking(
            ranking, labels[q_rows], labels[g_rows], cfg.ks, exclude_self=exclude,
            include_queries_without_relevant=cfg.include_queries_without_relevant,
        ))
        rel, n_rel, _ = relevance(ranking, labels[q_rows], labels[g_rows], exclude_self=exclude)
        context.update(ranking=ranking, exclude=exclude, rel=rel, n_rel=n_rel)
        if cfg.knn:
            metrics.update(knn_from_ranking(labels[q_rows], labels[g_rows], scores[:, :cfg.knn], ranking[:, :cfg.knn]))
    if cfg.attributes:
        rows = q_rows  # attribute MAP ranks within the query set (ASEN / RPF protocol)
        metrics.update(attribute_map(vectors[rows], [items[r].metadata for r in rows], cfg.attributes))
    return metrics, context


def _searcher(collection: CollectionStore, items: list[Item], query_vectors: np.ndarray, query_colours: np.ndarray,
              q_rows: np.ndarray, g_rows: np.ndarray, cfg: EvalConfig
              ) -> Callable[[str, int], tuple[np.ndarray, np.ndarray]]:
    """Rank the queries through the store's own search (its exact scan, its ANN index or one built
    from ``spec``), the gallery as its allowed items and each query left out of its own results:
    (scores, gallery positions), Q x depth, -inf / -1 padded."""
    vids = np.array([it.vid for it in items], np.int64)
    position = dict(zip(vids[g_rows].tolist(), range(len(g_rows))))
    within = vids[g_rows] if len(g_rows) < len(items) else None
    exclude = [(v,) for v in vids[q_rows].tolist()]

    def search(spec: str, depth: int) -> tuple[np.ndarray, np.ndarray]:
        found, scores, _ = collection.search_batch(
            query_vectors, depth, within=within, exclude=exclude, colours=query_colours,
            colour_weight=cfg.colour_weight, index=spec)
        ranking = np.fromiter((position.get(v, -1) for v in found.ravel().tolist()), np.int64, found.size)
        return scores, ranking.reshape(found.shape)

    return search


def example_grids(context: dict[str, Any], out_dir: Path, *, n: int = 3, k: int = 10) -> list[tuple[str, Path]]:
    """Result grids of the best and worst queries by AP@k (queries with a relevant item only);
    relevant results are outlined green."""
    if "rel" not in context:
        return []
    items, q_rows, g_rows = context["items"], context["q_rows"], context["g_rows"]
    rel, n_rel, ranking, exclude = context["rel"], context["n_rel"], context["ranking"], context["exclude"]
    from vestis.eval.metrics import average_precision_at_k

    ap = average_precision_at_k(rel, n_rel, k)
    valid = np.flatnonzero(~np.isnan(ap))
    if len(valid) == 0:
        return []
    order = valid[np.lexsort((valid, -ap[valid]))]
    picks = [("best", i) for i in order[:n]] + [("worst", i) for i in order[::-1][:n]]
    out = []
    for kind, qi in picks:
        query = items[q_rows[qi]]
        positions = [p for p in ranking[qi] if p >= 0 and p != exclude[qi]][:k]
        cells = []
        for rank_pos, p in enumerate(positions):
            it = items[g_rows[p]]
            outline = "#2ca02c" if rel[qi, rank_pos] else "#bbbbbb"
            cells.append((load_source_image(it.source), it.id, key_labels(it.metadata), outline))
        path = out_dir / f"example-{kind}-{query.id}.png".replace("/", "_")
        contact_sheet(load_source_image(query.source), cells, path, query_caption=key_labels(query.metadata))
        out.append((f"{kind} query {query.id} (AP@{k} = {ap[qi]:.2f})", path))
    return out


def run_eval(collection_dir: Path, cfg: EvalConfig, *, report_dir: Path | None, command: str) -> dict[str, Any]:
    with open_collection(collection_dir) as collection:
        metrics, context = evaluate_collection(collection, cfg)
        metrics["encoder"] = collection.encoder_name
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            examples = example_grids(context, report_dir, k=min(10, max(cfg.ks)))
            title = f"vestis eval: {collection_dir.name} ({', '.join(cfg.group or cfg.attributes)})"
            write_report(report_dir, metrics, title=title, command=command, examples=examples)
    return metrics

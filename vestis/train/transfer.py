"""Transfer sets: how a trained model retrieves outside the domain it was trained on.

A head trained on catalogue groups (article type and colour of studio shots) can lose the general
visual structure that made the backbone's features useful on other photos. A run's config names
transfer sets (``transfer:``, :class:`vestis.train.config.TransferSetConfig`): other collections,
indexed with the training backbone, and the label column to judge by. Each is scored
leave-one-out (every labelled item queries all the others, relevant = the same label,
:func:`vestis.eval.protocols.leave_one_out`) twice: with the trained model's embedding of the
items and with the untrained backbone's stored vectors. A model worse than its backbone on a set
is flagged (``worse``) and warned about, with the 95 % interval of the change over the set's
queries (a paired bootstrap): ``worse_beyond_noise`` when even its upper end is below zero, so a
change within the sampling noise of a small set is told from a real loss. An attribute-aware model
has one space per attribute: it scores each set in the space its config names (``attribute``), from
the set's feature maps.

A cross-collection set (a ``label_map``) asks what shoppers ask: the query collection's items (photos
of people) search a gallery (the catalogue: by default the training collection, all of it), relevant
= the gallery items the map matches. It reports P@10, R@10 (hit@10) and mAP@10 the same way, model
(queries and gallery both through the trained model) against backbone (both collections' stored
vectors, which must come from the training backbone).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.eval.cross import LabelMap
from vestis.eval.metrics import average_precision_at_k, change_interval, retrieval_metrics
from vestis.eval.protocols import group_labels, leave_one_out, leave_one_out_ranking, per_query_ap, rank, split_by_id
from vestis.train.config import DataConfig, TransferSetConfig
from vestis.train.features import Items, load_items

log = logging.getLogger(__name__)

KS = (1, 10)
METRICS = ("mAP@10", "P@10", "R@1", "R@10")
JUDGED_K = 10
JUDGED_BY = f"mAP@{JUDGED_K}"  # the figure a model is judged by, and its change intervals
TRAINING_GALLERY = "the training collection"  # a cross-collection set's default gallery, in metrics.json
QUERY_SPLIT_SEED = 0  # the split of a cross-collection set's queries into val and test halves


@dataclass
class TransferSet:
    """A transfer collection's items (with their stored backbone vectors) and label groups; for an
    attribute-aware model, the attribute whose space scores it (``space``). A cross-collection set
    has no label groups but a ``gallery`` (its items, with their stored vectors) and the
    ``relevance`` of each gallery item to each query (queries x gallery)."""

    config: TransferSetConfig
    items: Items
    labels: np.ndarray | None
    space: str | None = None
    gallery: Items | None = None
    relevance: np.ndarray | None = None

    @property
    def gallery_set(self) -> TransferSet:
        """The gallery as a set of its own: what a model's ``embed`` turns into gallery vectors."""
        return TransferSet(self.config, self.gallery, None, self.space)

    @property
    def title(self) -> str:
        return self.config.title

    def subset(self, rows: list[int]) -> TransferSet:
        """The set without the items not at ``rows`` (e.g. images that can no longer be read)."""
        log.warning("transfer set %s: %d of its %d items are left out", self.title, len(self.items) - len(rows),
                    len(self.items))
        return TransferSet(self.config, self.items.subset(rows), None if self.labels is None else self.labels[rows],
                           self.space, self.gallery, None if self.relevance is None else self.relevance[rows])


def load_transfer_sets(configs: list[TransferSetConfig], encoder_version: str,
                       training: Items | None = None) -> tuple[list[TransferSet], list[str]]:
    """The configured sets that can be measured, and a note for each one skipped: a missing
    collection (an error when ``required``) or one indexed with another encoder than
    ``encoder_version`` (always an error: its vectors are no baseline for this model). A
    cross-collection set without a ``gallery`` searches the ``training`` items."""
    sets, notes = [], []
    for cfg in configs:
        paths = [cfg.collection, *([cfg.gallery] if cfg.label_map is not None and cfg.gallery else [])]
        missing = _missing_collection(cfg, paths)
        if missing:
            log.warning(missing)
            notes.append(missing)
            continue
        items = _backbone_items(cfg, cfg.collection, encoder_version)
        if cfg.label_map is None:
            sets.append(TransferSet(cfg, items, items.groups([cfg.label])))
            continue
        gallery = _backbone_items(cfg, cfg.gallery, encoder_version) if cfg.gallery else training
        if gallery is None or gallery.vectors is None:
            raise VestisError(f"transfer set {cfg.title}: the training items have no stored backbone vectors to "
                              "search as its gallery: name a `gallery` collection")
        sets.append(cross_set(cfg, items, gallery))
    return sets, notes


def _missing_collection(cfg: TransferSetConfig, paths: list[str]) -> str | None:
    """The note of a set skipped for the first of its collections (``paths``) that is not built
    (an error when the set is ``required``); None when all are."""
    from vestis.store.factory import collection_exists

    for path in paths:  # a folder or a Milvus location
        if not collection_exists(path):
            note = (f"transfer set {cfg.title}: no collection at {path}, skipped "
                    f"(build it with `vestis index SOURCE --collection {path}`)")
            if cfg.required:
                raise VestisError(note.replace(", skipped", ""))
            return note
    return None


def _backbone_items(cfg: TransferSetConfig, path: str, encoder_version: str) -> Items:
    """A collection's items with their stored vectors, which must come from the training backbone."""
    items = load_items(DataConfig(collection=path), Path(path).parent)
    if items.encoder_version != encoder_version:
        raise VestisError(f"transfer set {cfg.title}: {path} was indexed with {items.encoder_version}, the "
                          f"model was trained on {encoder_version}: re-index it with the training backbone")
    return items


def cross_set(cfg: TransferSetConfig, items: Items, gallery: Items) -> TransferSet:
    """A cross-collection set: the ``items`` the label map asks (or the configured half of them)
    as queries of ``gallery``, with the relevance the map gives."""
    label_map = LabelMap.load(Path(cfg.label_map))
    asked = [i for i, metadata in enumerate(items.metadata) if label_map.asks(metadata)]
    if cfg.queries != "all":
        strata = group_labels([items.metadata[i] for i in asked], list(label_map.required))
        # a stratum of one photo goes to "train" (split_by_id's rule): it is in neither half
        half = split_by_id([items.ids[i] for i in asked], strata, (0.0, 0.5, 0.5), seed=QUERY_SPLIT_SEED)
        asked = [i for i in asked if half[items.ids[i]] == cfg.queries]
    if not asked:
        raise VestisError(f"transfer set {cfg.title}: no item of {cfg.collection} has a value in "
                          f"{', '.join(label_map.required)} (the columns {cfg.label_map} requires)")
    missing = sorted({g for g, _ in label_map.columns.values()} - {k for m in gallery.metadata[:1000] for k in m})
    if missing:
        raise VestisError(f"transfer set {cfg.title}: {cfg.label_map} matches gallery columns that its items do "
                          f"not have: {', '.join(missing)}")
    queries = items.subset(asked)
    columns = {g: np.array([str(m.get(g, "")) for m in gallery.metadata]) for g, _ in label_map.columns.values()}
    return TransferSet(cfg, queries, None, gallery=gallery, relevance=label_map.relevance(queries.metadata, columns))


def scores(vectors: np.ndarray, labels: np.ndarray) -> tuple[dict[str, float | int], np.ndarray]:
    """Leave-one-out mAP@10, P@10, R@1, R@10 and the number of queries; and each query's AP@10."""
    ranking = leave_one_out_ranking(vectors, labels, max(*KS, JUDGED_K))
    out = leave_one_out(vectors, labels, KS, ranking=ranking)
    return ({**{m: float(out[m]) for m in METRICS}, "n_queries": int(out["n_queries"])},
            per_query_ap(ranking, labels, labels, JUDGED_K, exclude_self=np.arange(len(labels))))


def cross_scores(queries: np.ndarray, gallery: np.ndarray,
                 relevance: np.ndarray) -> tuple[dict[str, float | int], np.ndarray]:
    """``queries`` searching ``gallery`` (vectors, exact inner product): mAP@10, P@10, R@1, R@10
    (hit@K: a relevant item in the top K) and the number of queries, every query counted (one
    with no relevant item scores 0); and each query's AP@10."""
    ranking = rank(queries, gallery, min(max(*KS, JUDGED_K), len(gallery)))[1]
    rel = np.take_along_axis(relevance, np.maximum(ranking, 0), axis=1) & (ranking >= 0)
    counts = relevance.sum(axis=1)
    out = retrieval_metrics(rel, counts, KS, include_queries_without_relevant=True)
    return ({**{m: float(out[m]) for m in METRICS}, "n_queries": len(queries)},
            np.nan_to_num(average_precision_at_k(rel, counts, JUDGED_K)))


def measure(sets: list[TransferSet], embed: Callable[[TransferSet], np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per set: the trained model's scores (``embed`` gives its vectors of the set's items), the
    untrained backbone's, the relative change of mAP@10 with its 95 % interval over the set's
    queries, whether the model is worse (and beyond that noise), and the attribute whose space
    scored the set (attribute-aware models) or, for a cross-collection set, its map and gallery."""
    results = {}
    for tset in sets:
        if tset.gallery is None:
            backbone, backbone_ap = scores(tset.items.vectors, tset.labels)
            model, model_ap = scores(embed(tset), tset.labels)
            kind = {"label": tset.config.label}
        else:
            backbone, backbone_ap = cross_scores(tset.items.vectors, tset.gallery.vectors, tset.relevance)
            model, model_ap = cross_scores(embed(tset), embed(tset.gallery_set), tset.relevance)
            kind = {"label_map": tset.config.label_map, "gallery": tset.config.gallery or TRAINING_GALLERY,
                    "gallery_items": len(tset.gallery), "queries": tset.config.queries}
        base = backbone[JUDGED_BY]
        low, high = change_interval(model_ap, backbone_ap)
        results[tset.title] = {
            "collection": tset.config.collection, **kind, "items": len(tset.items),
            **({"attribute": tset.space} if tset.space else {}),
            "model": model, "backbone": backbone,
            f"{JUDGED_BY}_change": (model[JUDGED_BY] / base - 1) if base else float("nan"),
            f"{JUDGED_BY}_change_ci95": [low, high],
            "worse": model[JUDGED_BY] < base,
            "worse_beyond_noise": high < 0,
        }
    return results


def change_text(change: float, ci: list[float] | None, *, compact: bool = False) -> str:
    """A change of mAP@10 with its 95 % interval, "+1.6% (95% CI -0.7% to +4.2%)", or ``compact``
    for a narrow table column, "+1.6%" over "[-0.7, +4.2]"; the change alone when there is no
    interval (too few queries)."""
    if not ci or any(math.isnan(v) for v in ci):
        return f"{change:+.1%}"
    if compact:
        return f"{change:+.1%}\n[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
    return f"{change:+.1%} (95% CI {ci[0]:+.1%} to {ci[1]:+.1%})"


def judged_by(result: dict[str, Any]) -> str:
    """What a set's relevance is, in a few words: its label (in its attribute's space), or the
    label map and gallery of a cross-collection set."""
    if "label_map" in result:
        gallery = "" if result["gallery"] == TRAINING_GALLERY else f" in {Path(result['gallery']).name}"
        half = "" if result["queries"] == "all" else f", {result['queries']} half"
        return f"{Path(result['label_map']).stem} map{gallery}{half}"
    if "attribute" in result:
        return f"{result['label']} ({result['attribute']} space)"
    return result["label"]


def warnings_for(results: dict[str, dict[str, Any]]) -> list[str]:
    """One line for each set where the trained model retrieves worse than its untrained backbone,
    saying whether the loss is beyond the sampling noise of the set's queries."""
    return [f"the trained model is WORSE than the untrained backbone out of domain on {name} "
            f"({judged_by(r)}): {JUDGED_BY} {r['model'][JUDGED_BY]:.4f} vs {r['backbone'][JUDGED_BY]:.4f}, "
            f"{change_text(r[f'{JUDGED_BY}_change'], r[f'{JUDGED_BY}_change_ci95'])}: "
            + ("beyond" if r["worse_beyond_noise"] else "within")
            + f" the sampling noise of its {r['model']['n_queries']} queries"
            for name, r in results.items() if r["worse"]]


def measure_transfer(sets: list[TransferSet], skipped: list[str],
                     embed: Callable[[TransferSet], np.ndarray]) -> dict[str, Any]:
    """The ``transfer`` summary of a run: the trained model's (``embed`` gives its vectors of a set's
    items) and the backbone's figures on ``sets`` (from :func:`load_transfer_sets`), the notes of
    the sets ``skipped``, and a warning for each set the model made worse (logged too)."""
    start = time.perf_counter()
    results = measure(sets, embed)
    warnings = warnings_for(results)
    for warning in warnings:
        log.warning("%s", warning)
    return {"transfer": results, "transfer_skipped": skipped, "transfer_warnings": warnings,
            "transfer_seconds": time.perf_counter() - start}

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
from vestis.eval.metrics import change_interval
from vestis.eval.protocols import leave_one_out, leave_one_out_ranking, per_query_ap
from vestis.train.config import DataConfig, TransferSetConfig
from vestis.train.features import Items, load_items

log = logging.getLogger(__name__)

KS = (1, 10)
METRICS = ("mAP@10", "P@10", "R@1")
JUDGED_K = 10
JUDGED_BY = f"mAP@{JUDGED_K}"  # the figure a model is judged by, and its change intervals


@dataclass
class TransferSet:
    """A transfer collection's items (with their stored backbone vectors) and label groups; for an
    attribute-aware model, the attribute whose space scores it (``space``)."""

    config: TransferSetConfig
    items: Items
    labels: np.ndarray
    space: str | None = None

    @property
    def title(self) -> str:
        return self.config.title

    def subset(self, rows: list[int]) -> TransferSet:
        """The set without the items not at ``rows`` (e.g. images that can no longer be read)."""
        log.warning("transfer set %s: %d of its %d items are left out", self.title, len(self.items) - len(rows),
                    len(self.items))
        return TransferSet(self.config, self.items.subset(rows), self.labels[rows], self.space)


def load_transfer_sets(configs: list[TransferSetConfig], encoder_version: str) -> tuple[list[TransferSet], list[str]]:
    """The configured sets that can be measured, and a note for each one skipped: a missing
    collection (an error when ``required``) or one indexed with another encoder than
    ``encoder_version`` (always an error: its vectors are no baseline for this model)."""
    from vestis.store.factory import collection_exists

    sets, notes = [], []
    for cfg in configs:
        path = cfg.collection  # a folder or a Milvus location
        if not collection_exists(path):
            note = (f"transfer set {cfg.title}: no collection at {path}, skipped "
                    f"(build it with `vestis index SOURCE --collection {path}`)")
            if cfg.required:
                raise VestisError(note.replace(", skipped", ""))
            log.warning(note)
            notes.append(note)
            continue
        items = load_items(DataConfig(collection=path), Path(path).parent)
        if items.encoder_version != encoder_version:
            raise VestisError(f"transfer set {cfg.title}: {path} was indexed with {items.encoder_version}, the "
                              f"model was trained on {encoder_version}: re-index it with the training backbone")
        labels = items.groups([cfg.label])
        sets.append(TransferSet(cfg, items, labels))
    return sets, notes


def scores(vectors: np.ndarray, labels: np.ndarray) -> tuple[dict[str, float | int], np.ndarray]:
    """Leave-one-out mAP@10, P@10, R@1 and the number of queries; and each query's AP@10."""
    ranking = leave_one_out_ranking(vectors, labels, max(*KS, JUDGED_K))
    out = leave_one_out(vectors, labels, KS, ranking=ranking)
    return ({**{m: float(out[m]) for m in METRICS}, "n_queries": int(out["n_queries"])},
            per_query_ap(ranking, labels, labels, JUDGED_K, exclude_self=np.arange(len(labels))))


def measure(sets: list[TransferSet], embed: Callable[[TransferSet], np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per set: the trained model's scores (``embed`` gives its vectors of the set's items), the
    untrained backbone's, the relative change of mAP@10 with its 95 % interval over the set's
    queries, whether the model is worse (and beyond that noise), and the attribute whose space
    scored the set (attribute-aware models)."""
    results = {}
    for tset in sets:
        backbone, backbone_ap = scores(tset.items.vectors, tset.labels)
        model, model_ap = scores(embed(tset), tset.labels)
        base = backbone[JUDGED_BY]
        low, high = change_interval(model_ap, backbone_ap)
        results[tset.title] = {
            "collection": tset.config.collection, "label": tset.config.label, "items": len(tset.items),
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


def warnings_for(results: dict[str, dict[str, Any]]) -> list[str]:
    """One line for each set where the trained model retrieves worse than its untrained backbone,
    saying whether the loss is beyond the sampling noise of the set's queries."""
    return [f"the trained model is WORSE than the untrained backbone out of domain on {name} "
            f"({r['label']}): {JUDGED_BY} {r['model'][JUDGED_BY]:.4f} vs {r['backbone'][JUDGED_BY]:.4f}, "
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

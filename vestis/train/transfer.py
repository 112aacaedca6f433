"""Transfer sets: how a trained model retrieves outside the domain it was trained on.

A head trained on catalogue groups (article type and colour of studio shots) can lose the general
visual structure that made the backbone's features useful on other photos. A run's config names
transfer sets (``transfer:``, :class:`vestis.train.config.TransferSetConfig`): other collections,
indexed with the training backbone, and the label column to judge by. Each is scored
leave-one-out (every labelled item queries all the others, relevant = the same label,
:func:`vestis.eval.protocols.leave_one_out`) twice: with the trained model's embedding of the
items and with the untrained backbone's stored vectors. A model worse than its backbone on a set
is flagged (``worse``) and warned about. An attribute-aware model has one space per attribute:
it scores each set in the space its config names (``attribute``), from the set's feature maps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.eval.protocols import leave_one_out
from vestis.train.config import DataConfig, TransferSetConfig
from vestis.train.features import Items, load_items

log = logging.getLogger(__name__)

KS = (1, 10)
METRICS = ("mAP@10", "P@10", "R@1")
JUDGED_BY = "mAP@10"


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
    sets, notes = [], []
    for cfg in configs:
        path = Path(cfg.collection)
        if not path.is_dir():
            note = (f"transfer set {cfg.title}: no collection at {path}, skipped "
                    f"(build it with `vestis index SOURCE --collection {path}`)")
            if cfg.required:
                raise VestisError(note.replace(", skipped", ""))
            log.warning(note)
            notes.append(note)
            continue
        items = load_items(DataConfig(collection=str(path)), path.parent)
        if items.encoder_version != encoder_version:
            raise VestisError(f"transfer set {cfg.title}: {path} was indexed with {items.encoder_version}, the "
                              f"model was trained on {encoder_version}: re-index it with the training backbone")
        labels = items.groups([cfg.label])
        sets.append(TransferSet(cfg, items, labels))
    return sets, notes


def scores(vectors: np.ndarray, labels: np.ndarray) -> dict[str, float | int]:
    """Leave-one-out mAP@10, P@10, R@1 and the number of queries."""
    out = leave_one_out(vectors, labels, KS)
    return {**{m: float(out[m]) for m in METRICS}, "n_queries": int(out["n_queries"])}


def measure(sets: list[TransferSet], embed: Callable[[TransferSet], np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per set: the trained model's scores (``embed`` gives its vectors of the set's items), the
    untrained backbone's, the relative change of mAP@10, whether the model is worse, and the
    attribute whose space scored the set (attribute-aware models)."""
    results = {}
    for tset in sets:
        backbone = scores(tset.items.vectors, tset.labels)
        model = scores(embed(tset), tset.labels)
        base = backbone[JUDGED_BY]
        results[tset.title] = {
            "collection": tset.config.collection, "label": tset.config.label, "items": len(tset.items),
            **({"attribute": tset.space} if tset.space else {}),
            "model": model, "backbone": backbone,
            f"{JUDGED_BY}_change": (model[JUDGED_BY] / base - 1) if base else float("nan"),
            "worse": model[JUDGED_BY] < base,
        }
    return results


def warnings_for(results: dict[str, dict[str, Any]]) -> list[str]:
    """One line for each set where the trained model retrieves worse than its untrained backbone."""
    return [f"the trained model is WORSE than the untrained backbone out of domain on {name} "
            f"({r['label']}): {JUDGED_BY} {r['model'][JUDGED_BY]:.4f} vs {r['backbone'][JUDGED_BY]:.4f} "
            f"({r[f'{JUDGED_BY}_change']:+.1%})" for name, r in results.items() if r["worse"]]


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

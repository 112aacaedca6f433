"""The street-to-shop training table (issue 29, item 6) from ``benchmarks/transfer_variants.py``
results: for each trained variant and interpolation, the in-domain test figure and every transfer
set's mAP@10 (cross-collection sets: also hit@10), each with its change over the untrained backbone
and the 95 % interval of that change; then the variant the validation half chooses.

    .venv/bin/python benchmarks/street_to_shop_training.py /work/runs-street/variants-arcface/results.json \\
        --choose-on street-top-val --report-on street-top-test

``--versus RUN_A RUN_B`` instead compares two finished runs (``vestis train`` output folders) on
RUN_B's cross-collection transfer sets, query by query: B's mAP@10 against A's, with the 95 %
interval of the change (is a variant better than the shipped run beyond noise?).

The choice: the highest mAP@10 on ``--choose-on`` (the validation half of the street queries) among
the rows whose in-domain mAP@10 is at least the low end of the first row's (the shipped settings)
95 % interval; the test half (``--report-on``) is only read for the table, never for the choice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from vestis.eval.metrics import change_interval
from vestis.train.command import HeadModel, prepare
from vestis.train.config import load_config
from vestis.train.trainer import load_checkpoint
from vestis.train.transfer import TransferSet, cross_scores, load_transfer_sets


def change(model: float, base: float, ci: list[float] | None) -> str:
    text = f"{model:.4f} ({model / base - 1:+.1%}"
    return text + (f", [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}])" if ci else ")")


def cell(result: dict[str, Any]) -> str:
    text = change(result["model"]["mAP@10"], result["backbone"]["mAP@10"], result["mAP@10_change_ci95"])
    if "label_map" in result:
        text += f"; hit@10 {result['model']['R@10']:.3f}"
    return text


def label(row: dict[str, Any]) -> str:
    return f"{row['variant']}, a={row['interpolate']:g}" if row["residual"] else row["variant"]


def run_embedding(run_dir: Path) -> Callable[[TransferSet], np.ndarray]:
    """The embedding of a finished run's best model (stage 1: of the stored backbone vectors)."""
    cfg = load_config(run_dir / "config.yaml")
    task = prepare(cfg)
    task.head.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    kind = HeadModel()
    return lambda tset: kind.embed_transfer(cfg, task, tset)


def versus(run_a: Path, run_b: Path) -> None:
    cfg = load_config(run_b / "config.yaml")
    embed_a, embed_b = run_embedding(run_a), run_embedding(run_b)
    version = load_checkpoint(run_b / "best.pt")["encoder_version"]
    sets, _ = load_transfer_sets([t for t in cfg.transfer if t.label_map], version)
    print(f"| set | {run_a.name} mAP@10 | {run_b.name} mAP@10 | change [95% CI] |\n|---|---|---|---|")
    for tset in sets:
        a, ap_a = cross_scores(embed_a(tset), embed_a(tset.gallery_set), tset.relevance)
        b, ap_b = cross_scores(embed_b(tset), embed_b(tset.gallery_set), tset.relevance)
        low, high = change_interval(ap_b, ap_a)
        print(f"| {tset.title} | {a['mAP@10']:.4f} | {b['mAP@10']:.4f} | {b['mAP@10'] / a['mAP@10'] - 1:+.1%} "
              f"[{100 * low:+.1f}, {100 * high:+.1f}] |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, nargs="*")
    ap.add_argument("--choose-on", default="street-top-val")
    ap.add_argument("--report-on", default="street-top-test")
    ap.add_argument("--versus", type=Path, nargs=2, metavar=("RUN_A", "RUN_B"))
    ap.add_argument("--not-chosen", action="append", default=[],
                    help="A variant left out of the choice (e.g. one trained on the validation half's photos).")
    args = ap.parse_args()
    if args.versus:
        versus(*args.versus)
        return
    rows = [r for path in args.results for r in json.loads(path.read_text())]
    sets = list(rows[0]["transfer"])
    print("| variant | in domain mAP@10 | " + " | ".join(f"{s} mAP@10" for s in sets) + " |")
    print("|---|---|" + "---|" * len(sets))
    first = rows[0]
    print("| untrained backbone | " + f"{first['test_baseline']['mAP@10']:.4f} | " + " | ".join(
        f"{first['transfer'][s]['backbone']['mAP@10']:.4f}"
        + (f"; hit@10 {first['transfer'][s]['backbone']['R@10']:.3f}" if "label_map" in first["transfer"][s] else "")
        for s in sets) + " |")
    for r in rows:
        domain = change(r["test"]["mAP@10"], r["test_baseline"]["mAP@10"], r["test_mAP@10_change_ci95"])
        print(f"| {label(r)} | {domain} | " + " | ".join(cell(r["transfer"][s]) for s in sets) + " |")
    # the low end of the shipped row's in-domain figure: the backbone's times the low end of its change
    low = first["test_baseline"]["mAP@10"] * (1 + first["test_mAP@10_change_ci95"][0])
    eligible = [r for r in rows if r["test"]["mAP@10"] >= low and r["variant"] not in args.not_chosen]
    best = max(eligible, key=lambda r: r["transfer"][args.choose_on]["model"]["mAP@10"])
    print(f"\nchosen on {args.choose_on} (in-domain mAP@10 >= {low:.4f}): {label(best)}: "
          f"{args.choose_on} {best['transfer'][args.choose_on]['model']['mAP@10']:.4f}, "
          f"{args.report_on} {cell(best['transfer'][args.report_on])}; "
          f"shipped: {args.report_on} {cell(first['transfer'][args.report_on])}")


if __name__ == "__main__":
    main()

"""The street-to-shop training table (issue 29, item 6) from ``benchmarks/transfer_variants.py``
results: for each trained variant and interpolation, the in-domain test figure and every transfer
set's mAP@10 (cross-collection sets: also hit@10), each with its change over the untrained backbone
and the 95 % interval of that change; then the variant the validation half chooses.

    .venv/bin/python benchmarks/street_to_shop_training.py /work/runs-street/variants-arcface/results.json \\
        --choose-on street-top-val --report-on street-top-test

The choice: the highest mAP@10 on ``--choose-on`` (the validation half of the street queries) among
the rows whose in-domain mAP@10 is at least the low end of the first row's (the shipped settings)
95 % interval; the test half (``--report-on``) is only read for the table, never for the choice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--choose-on", default="street-top-val")
    ap.add_argument("--report-on", default="street-top-test")
    args = ap.parse_args()
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
    eligible = [r for r in rows if r["test"]["mAP@10"] >= low]
    best = max(eligible, key=lambda r: r["transfer"][args.choose_on]["model"]["mAP@10"])
    print(f"\nchosen on {args.choose_on} (in-domain mAP@10 >= {low:.4f}): {label(best)}: "
          f"{args.choose_on} {best['transfer'][args.choose_on]['model']['mAP@10']:.4f}, "
          f"{args.report_on} {cell(best['transfer'][args.report_on])}; "
          f"shipped: {args.report_on} {cell(first['transfer'][args.report_on])}")


if __name__ == "__main__":
    main()

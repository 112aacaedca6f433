"""Training figures: ImageNet features vs trained heads, on the held-out test split.

    .venv/bin/python benchmarks/train_heads.py --collection runs/collections/fashion-product-images-300
    .venv/bin/python benchmarks/train_heads.py --collection runs/collections/fashion-product-images-small
    .venv/bin/python benchmarks/train_heads.py --configs configs/fashion-mnist-arcface.yaml configs/fashion-mnist-ce.yaml

Each config is trained as ``vestis train`` would (``--collection`` replaces its data, ``--set``
adds overrides), into ``<out>/<config name>/``. All runs of one call use the same split (by
product id, seed 0, 80/10/10). Queries are the labelled test items; the gallery is what the
config's ``eval.gallery`` says (Fashion Product Images: every item outside the training split).
Row (a) is the untrained backbone features scored with the same protocol. Prints a markdown table
(mAP@10, P@10, P@50, R@1, kNN accuracy when configured, training time) and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vestis.train.command import run
from vestis.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [ROOT / "configs/fashion-product-arcface.yaml", ROOT / "configs/fashion-product-triplet.yaml"]
COLUMNS = ("mAP@10", "P@10", "P@50", "R@1", "kNN_accuracy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", type=Path, default=DEFAULT_CONFIGS)
    ap.add_argument("--collection", help="Collection directory replacing the configs' data.")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="Config override key=value.")
    ap.add_argument("--out", type=Path, help="Runs directory (default: runs/bench-<collection or config name>).")
    args = ap.parse_args()

    tag = Path(args.collection).name if args.collection else args.configs[0].stem
    out = args.out or Path("runs") / f"bench-{tag}"
    data = [f"data.collection={args.collection}"] if args.collection else []
    rows, results = [], {}
    for path in args.configs:
        cfg = load_config(path, [*data, f"output={out / path.stem}", *args.overrides])
        start = time.perf_counter()
        summary = run(cfg)
        wall = time.perf_counter() - start
        results[path.stem] = {**summary, "wall_seconds": wall}
        if not rows and "test_baseline" in summary:  # stage 2 starts from a head: no untrained row
            rows.append(("(a) backbone features, untrained", summary["test_baseline"], None))
        label = f"{cfg.head.kind} head, dim {cfg.head.dim} (stage {cfg.stage}, best epoch {summary['best_epoch']})"
        rows.append((label, summary["test"], summary["train_seconds"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))

    first = next(iter(results.values()))
    columns = [c for c in COLUMNS if c in first["test"]]
    print(f"\nsplit sizes {first['split_sizes']}, {first['test']['n_queries']} test queries with a relevant item "
          f"({first['test']['n_queries_without_relevant']} without), {first['classes']} training classes\n")
    print("| method | " + " | ".join(columns) + " | training time |")
    print("|---|" + "---|" * (len(columns) + 1))
    base = rows[0][1]["mAP@10"] if rows[0][2] is None else None  # the untrained row, when there is one
    for label, metrics, seconds in rows:
        gain = "" if seconds is None or base is None else f" ({metrics['mAP@10'] / base - 1:+.0%})"
        cells = [f"{metrics[c]:.4f}" + (gain if c == "mAP@10" else "") for c in columns]
        print(f"| {label} | " + " | ".join(cells) + f" | {'-' if seconds is None else f'{seconds:.1f} s'} |")
    print(f"\nruns and results.json in {out}")


if __name__ == "__main__":
    main()

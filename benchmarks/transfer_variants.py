"""Transfer figures (issue 16): in-domain test and transfer sets for each training variant.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transfer_variants.py \\
        --config configs/fashion-product-arcface.yaml \\
        --variant "arcface m=0.5:" --variant "articleType:data.labels=[articleType];head.distill=10" \\
        --weights 0,0.5,0.7 --out runs/transfer-variants

Each variant (``label:key=value;key=value``, overrides on top of the config and ``--set``) is
trained once as ``vestis train`` would (without the ONNX export). The retrieval embedding's
``head.backbone_weight`` w only changes how the trained head is used, not its training, so
every w of ``--weights`` is then scored on the same trained head, and so is every
interpolation a of ``--interpolations`` for a residual head (``head.interpolate``: the
correction the head learned, scaled by a): the in-domain test split
(mAP@10 and its change over the untrained backbone) and each transfer set of the config
(mAP@10 and its change over the untrained backbone), as ``vestis train`` reports them. Prints a
markdown table and writes ``results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from vestis.train.command import HeadModel, prepare, run
from vestis.train.config import load_config
from vestis.train.heads import EmbeddingHead
from vestis.train.trainer import load_checkpoint
from vestis.train.transfer import load_transfer_sets, measure_transfer


def parse_variant(text: str) -> tuple[str, list[str]]:
    label, _, overrides = text.partition(":")
    return label.strip(), [o.strip() for o in overrides.split(";") if o.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="Config override key=value.")
    ap.add_argument("--variant", action="append", required=True, help="label:key=value;key=value")
    ap.add_argument("--weights", default="0", help="Backbone weights w to score each trained head with.")
    ap.add_argument("--interpolations", default="1",
                    help="Interpolations a to score each trained residual head with (others: 1 only).")
    ap.add_argument("--out", type=Path, default=Path("runs/transfer-variants"))
    ap.add_argument("--reuse", action="store_true",
                    help="Score a variant whose run folder (OUT/LABEL) already holds best.pt and metrics.json "
                         "without training it again.")
    args = ap.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    interpolations = [float(a) for a in args.interpolations.split(",")]

    results: list[dict] = []
    for text in args.variant:
        label, overrides = parse_variant(text)
        slug = "".join(c if c.isalnum() else "-" for c in label).strip("-")
        cfg = load_config(args.config, [*args.overrides, *overrides, f"output={args.out / slug}",
                                        "export.onnx=false"])
        done = cfg.run_dir / "metrics.json"
        summary = json.loads(done.read_text()) if args.reuse and done.is_file() else run(cfg)
        task = prepare(cfg)
        state = load_checkpoint(cfg.run_dir / "best.pt")["model"]
        train_features = torch.from_numpy(task.items.vectors[task.rows(*cfg.train.train_splits)])
        kind = HeadModel()
        sets, skipped = load_transfer_sets(cfg.transfer, task.items.encoder_version, task.items)
        sets = kind.prepare_transfer(cfg, sets)
        for w in weights:
            for a in interpolations if cfg.head.residual else [1.0]:
                task.head = task.model = EmbeddingHead.from_config(
                    task.head.in_dim, dataclasses.replace(cfg.head, backbone_weight=w, interpolate=a))
                missing, unexpected = task.head.load_state_dict(state, strict=False)
                if (set(missing) | set(unexpected)) - {"centre"}:
                    raise SystemExit(f"{label}: checkpoint does not fit the head ({missing}, {unexpected})")
                if task.head.needs_centre:
                    task.head.set_centre(train_features)
                test = kind.evaluate(cfg, task)
                transfer = measure_transfer(sets, skipped, lambda tset: kind.embed_transfer(cfg, task, tset))
                row = {"variant": label, "overrides": overrides, "backbone_weight": w, "interpolate": a,
                       "residual": cfg.head.residual, "best_epoch": summary["best_epoch"],
                       "train_seconds": summary["train_seconds"], "test": test["test"],
                       "test_baseline": test["test_baseline"],
                       "test_mAP@10_change_ci95": test["test_mAP@10_change_ci95"],
                       "transfer": transfer.get("transfer", {}),
                       "transfer_skipped": transfer.get("transfer_skipped", [])}
                results.append(row)
                print(json.dumps({k: row[k] for k in ("variant", "backbone_weight", "interpolate")} | {
                    "in_domain": round(row["test"]["mAP@10"], 4),
                    **{n: round(r["model"]["mAP@10"], 4) for n, r in row["transfer"].items()}}), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))  # after each variant

    sets = list(results[0]["transfer"])
    base = results[0]["test_baseline"]["mAP@10"]
    print("\n| variant | w | a | best epoch | in-domain mAP@10 | " + " | ".join(f"{s} mAP@10" for s in sets) + " |")
    print("|---|---|---|---|---|" + "---|" * len(sets))
    print("| untrained backbone | – | – | – | " + f"{base:.4f} | "
          + " | ".join(f"{results[0]['transfer'][s]['backbone']['mAP@10']:.4f}" for s in sets) + " |")
    for r in results:
        cells = [f"{r['transfer'][s]['model']['mAP@10']:.4f} ({r['transfer'][s]['mAP@10_change']:+.0%})" for s in sets]
        interpolation = f"{r['interpolate']:g}" if r["residual"] else "–"
        print(f"| {r['variant']} | {r['backbone_weight']:g} | {interpolation} | {r['best_epoch']} | "
              f"{r['test']['mAP@10']:.4f} ({r['test']['mAP@10'] / base - 1:+.0%}) | " + " | ".join(cells) + " |")
    print(f"\nruns and results.json in {args.out}")


if __name__ == "__main__":
    main()

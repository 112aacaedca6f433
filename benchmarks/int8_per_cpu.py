"""The 8-bit recipes a CPU can run, end to end: ``vestis index`` of a catalogue into a new
collection with each (images per second, the whole command timed) and ``vestis eval`` of what it
built (P@10, same articleType + baseColour), side by side in one run. The recipes: the portable
``efficientnet-lite0-int8`` and, on a CPU with VNNI, ``efficientnet-lite0-int8-vnni`` (refused
elsewhere); ``vestis index`` on a new collection picks the VNNI one where the CPU has it.

    .venv/bin/python benchmarks/int8_per_cpu.py [--fpi ../shared/datasets/fashion-product-images-300.zip]
        [--rounds 2] [--out DIR] [--json FILE]

Each round indexes with every recipe, the order reversed every other round (A B, B A, ...), so a
load that changes during the run weighs on both alike. Both models are built and their sessions
opened once before the first timing. The load average is recorded beside every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vestis.encoders import DEFAULT_ENCODER, get_encoder
from vestis.encoders.cpu import describe_cpu, has_vnni
from vestis.encoders.quantize import quantized_name

ROOT = Path(__file__).resolve().parents[1]
VESTIS = str(Path(sys.executable).with_name("vestis"))


def vestis(*args: str) -> dict:
    """Run a vestis command with ``--json`` and return its report."""
    done = subprocess.run([VESTIS, *args, "--json"], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fpi", default=str(ROOT.parent / "shared/datasets/fashion-product-images-300.zip"))
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, help="where the collections go (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    names = [quantized_name(args.backbone)] + ([quantized_name(args.backbone, vnni=True)] if has_vnni() else [])
    for name in names:  # cached model and optimised graph built before anything is timed
        get_encoder(name)
    print(f"CPU: {describe_cpu()}; default encoder for a new collection here: {DEFAULT_ENCODER}", flush=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="int8-per-cpu-"))
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            collection = out / f"{name}-{r}"
            shutil.rmtree(collection, ignore_errors=True)
            load = os.getloadavg()[0]
            started = time.perf_counter()
            report = vestis("index", args.fpi, "-c", str(collection), "--encoder", name)
            seconds = time.perf_counter() - started
            run = {"round": r, "items": report["added"], "seconds": round(seconds, 2),
                   "images_per_second": round(report["added"] / seconds, 1),
                   "embedding_images_per_second": report["images_per_second"],
                   "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
            runs[name].append(run)
            print(f"{name} round {r}: {run}", flush=True)
    results = {"cpu": describe_cpu(), "default_encoder": DEFAULT_ENCODER, "dataset": args.fpi, "encoders": {}}
    print("\n| encoder | images | images/s end to end (each round) | P@10 | load average (each run) |\n"
          "|---|---|---|---|---|")
    for name in names:
        metrics = vestis("eval", "-c", str(out / f"{name}-0"), "--group", "articleType,baseColour", "--k", "1,10,50")
        rates = [run["images_per_second"] for run in runs[name]]
        results["encoders"][name] = {"runs": runs[name], "P@1": metrics["P@1"], "P@10": metrics["P@10"],
                                     "mAP@10": metrics["mAP@10"]}
        loads = ", ".join(f"{run['load_before']:.1f}-{run['load_after']:.1f}" for run in runs[name])
        print(f"| {name} | {runs[name][0]['items']:,} | {' / '.join(f'{x:.1f}' for x in rates)} | "
              f"{metrics['P@10']:.4f} | {loads} |")
    if len(names) == 2:
        a, b = (sum(run["seconds"] for run in runs[name]) for name in names)
        print(f"\n{names[1]} is {a / b:.2f}x as fast as {names[0]} end to end (total seconds over the rounds)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.out is None:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()

"""Cold start of ``vestis search --json``: a fresh process per query, wall time and CPU time
(user + system, less disturbed by other load than wall time), for one or more source trees
side by side, alternating between them.

    .venv/bin/python benchmarks/cold_start.py --collection C --image photo.jpg [--trees . ../main] [--runs 5]

Each tree runs ``python -m vestis`` from its own root, so its own code is imported.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--collection", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--trees", nargs="+", default=[str(ROOT)])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    command = [sys.executable, "-m", "vestis", "search", "-c", str(Path(args.collection).resolve()),
               str(Path(args.image).resolve()), "--json"]
    results: dict[str, dict[str, list[float]]] = {t: {"wall": [], "cpu": [], "reported": []} for t in args.trees}
    for _ in range(args.runs):
        for tree in args.trees:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            out = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            results[tree]["wall"].append(wall)
            results[tree]["cpu"].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            results[tree]["reported"].append(json.loads(out.stdout)["timings_ms"]["total"] / 1000)
    print("| tree | wall s (median) | CPU s (median) | command's own total s (median) |\n|---|---|---|---|")
    for tree, r in results.items():
        print(f"| {tree} | {statistics.median(r['wall']):.2f} | {statistics.median(r['cpu']):.2f} "
              f"| {statistics.median(r['reported']):.2f} |")


if __name__ == "__main__":
    main()

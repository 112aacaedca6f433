"""Core engine figures: ingest rate, query timing breakdown, leave-one-out quality.

    .venv/bin/python benchmarks/core_ingest_query.py [--source ../shared/datasets/fashion-product-images-300.zip]

Builds a fresh collection from the source with the default encoder, then times single-image
queries (real catalogue JPEGs, decoded from bytes) and prints a markdown table of medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vestis.data import open_catalogue
from vestis.eval.protocols import group_labels, leave_one_out
from vestis.search.engine import Engine
from vestis.store.collection import Collection

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(ROOT.parent / "shared/datasets/fashion-product-images-300.zip"))
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        coll_dir = Path(tmp) / "c"
        # Ingest, end to end through the CLI (process start, model load, decode, embed, write).
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "vestis", "index", args.source, "--collection", str(coll_dir)],
            check=True, capture_output=True,
        )
        ingest_s = time.perf_counter() - t0
        coll = Collection.open(coll_dir)
        n = len(coll)
        print(f"ingest: {n} images in {ingest_s:.1f} s = {n / ingest_s:.1f} images/s (end to end, CLI)")

        # Query breakdown, model and collection loaded once.
        engine = Engine(coll)
        engine.load()
        catalogue = open_catalogue(args.source)
        items = list(catalogue)[: args.queries]
        rows: dict[str, list[float]] = {}
        for item in items:
            timings: dict[str, float] = {}
            t = time.perf_counter()
            query = engine.query(image=item.read(), timings=timings)
            engine.search(query, k=10, timings=timings)
            timings["total"] = (time.perf_counter() - t) * 1000
            for key, value in timings.items():
                rows.setdefault(key, []).append(value)
        med = {key: statistics.median(v) for key, v in rows.items()}
        p99 = {key: float(np.percentile(v, 99)) for key, v in rows.items()}
        print("| stage | p50 ms | p99 ms |\n|---|---|---|")
        for key in med:
            print(f"| {key} | {med[key]:.2f} | {p99[key]:.2f} |")
        print(f"embed + search p50: {statistics.median(np.add(rows['embed'], rows['search'])):.2f} ms")

        # Quality sanity: leave-one-out on articleType+baseColour, exact cosine search.
        items_all = list(coll.iter_items())
        vids, vectors, _ = coll.table().view
        order = np.argsort(vids)
        labels = group_labels([it.metadata for it in items_all], ["articleType", "baseColour"])
        metrics = leave_one_out(vectors[order], labels, ks=(1, 10, 50))
        print(json.dumps({k: round(float(v), 4) for k, v in metrics.items()}, indent=1))
        coll.close()


if __name__ == "__main__":
    main()

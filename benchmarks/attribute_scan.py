"""What the size of an attribute space costs attribute search (issue 16, BENCHMARKS.md "Transfer").

    .venv/bin/python benchmarks/attribute_scan.py --items 44441 --attributes 6 --dims 64,256,1280

Attribute search scores every item exactly, attribute by attribute, from the in-memory table of
attribute vectors (:func:`vestis.store.attribute_index.attribute_scores`, one float32 row of
attributes x dim per item). This times that function for one and for three
attributes at each size, on random unit vectors of the same shape, the sizes interleaved round by
round; medians over ``--rounds``. Prints the table's memory and the medians as markdown.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from vestis.store.attribute_index import attribute_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=44441)
    ap.add_argument("--attributes", type=int, default=6)
    ap.add_argument("--dims", default="64,256,1280")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tables, queries = {}, {}
    for dim in (int(d) for d in args.dims.split(",")):
        table = rng.standard_normal((args.items, args.attributes, dim), dtype=np.float32)
        table /= np.linalg.norm(table, axis=2, keepdims=True)
        tables[dim] = table.reshape(args.items, -1)
        queries[dim] = table[0]  # an item's own vectors as the query: attributes x dim
    times: dict[tuple[int, int], list[float]] = {(d, n): [] for d in tables for n in (1, 3)}
    for _ in range(args.rounds):
        for dim, table in tables.items():
            for n in (1, 3):
                start = time.perf_counter()
                asked = np.where(np.arange(args.attributes)[:, None] < n, queries[dim], 0.0).astype(np.float32)
                attribute_scores(table, dim, asked)
                times[dim, n].append(time.perf_counter() - start)
    print(f"{args.items:,} items, {args.attributes} attributes, median of {args.rounds} rounds\n")
    print("| dim | table in memory | 1 attribute | 3 attributes |")
    print("|---|---|---|---|")
    for dim, table in tables.items():
        cells = [f"{statistics.median(times[dim, n]) * 1e3:.1f} ms" for n in (1, 3)]
        print(f"| {dim} | {table.nbytes / 2**20:,.0f} MiB | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

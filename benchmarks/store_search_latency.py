"""The store's vector search of one query (``search_vectors``, what every image search asks) on a
collection: plain, with the query's own item left out, with a metadata filter, with colour fused.

    .venv/bin/python benchmarks/store_search_latency.py --collection C [--queries 50] [--rounds 4]
        [--filter gender=Women]

Queries are stored catalogue vectors (seed 0); prints the median of each kind (ms) as JSON. To
compare two versions, run it from each checkout in turn, alternating, on the same load.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from vestis.store.factory import open_collection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", required=True)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--filter", default="gender=Women", help="KEY=VALUE")
    args = parser.parse_args()
    key, _, value = args.filter.partition("=")
    with open_collection(args.collection) as collection:
        collection.warm()
        vids, vectors, colours = collection.table().view
        rows = np.random.default_rng(0).choice(len(vids), min(args.queries, len(vids)), replace=False)
        kinds = {
            "plain": lambda r: {},
            "more_like_this": lambda r: {"exclude": (int(vids[r]),)},
            f"filter_{key}={value}": lambda r: {"filters": {key: [value]}},
            "colour_0.5": lambda r: {"colour": colours[r], "colour_weight": 0.5},
        }
        medians = {}
        for name, options in kinds.items():
            times = []
            for r in np.tile(rows, args.rounds):
                t0 = time.perf_counter()
                collection.search_vectors(vectors[r], 10, **options(r))
                times.append(time.perf_counter() - t0)
            medians[name] = round(1000 * float(np.median(times)), 3)
        index = collection.active_index_spec
    print(json.dumps({"collection": args.collection, "index": index, "median_ms": medians}))


if __name__ == "__main__":
    main()

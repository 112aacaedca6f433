"""Text-query latency on a collection with a joint model, beside image search measured in the same run.

    .venv/bin/python benchmarks/text_latency.py --collection C [--queries 60] [--threads 1]

Times, per query text (label phrases of the catalogue, own words and paraphrased): embedding the
text, reading the label values it names, keyword / vector / hybrid ranking of the whole collection
(hybrid with the label values read, the default, and without; the vector side through the joint
index as configured, and as an exact scan of every joint vector for comparison); and, for scale, an image search
with a stored item's vector through the collection's index. Prints medians (ms) as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vestis.index.topk import top_k
from vestis.search.results import Query
from vestis.search.searcher import Searcher
from vestis.search.text import CANDIDATES, TextQuery, TextSearcher
from vestis.store.collection import Collection

TEXTS = ["black backpack", "a rucksack in black", "men tshirt", "tee for a boy", "navy blue shirt",
         "a wristwatch in silver", "red dress", "women heels", "white sports shoes", "trainers for guys"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the text encoder")
    args = parser.parse_args()
    with Collection.open(args.collection) as coll:
        searcher = TextSearcher.open(coll, threads=args.threads)
        if searcher.model is None:
            raise SystemExit(f"{args.collection} has no joint model: run `vestis text build` first")
        texts = [TEXTS[i % len(TEXTS)] for i in range(args.queries)]
        searcher.ranking(searcher.query("warm up"), 10)  # loads the vectors, BM25, the labels and the ANN index
        keys = ("embed", "read labels", "keyword", "vector", "vector (exact scan)", "hybrid without labels", "hybrid")
        times: dict[str, list[float]] = {k: [] for k in keys}
        for text in texts:
            t0 = time.perf_counter()
            vector = searcher.model.embed_text(text)[0]
            t1 = time.perf_counter()
            labels = searcher.understand(text)
            t2 = time.perf_counter()
            searcher.ranking(TextQuery(text), 10)
            t3 = time.perf_counter()
            searcher.ranking(TextQuery(None, vector), 10)
            t4 = time.perf_counter()
            vids, vectors = searcher.index.vectors()
            vids[top_k(vectors @ vector, CANDIDATES)]
            t5 = time.perf_counter()
            searcher.ranking(TextQuery(text, vector), 10)
            t6 = time.perf_counter()
            searcher.ranking(TextQuery(text, vector, labels=labels), 10)
            t7 = time.perf_counter()
            for key, seconds in zip(keys, np.diff([t0, t1, t2, t3, t4, t5, t6, t7])):
                times[key].append(seconds * 1000)
        images = Searcher(coll)
        stored = coll.table().view[1][: args.queries]
        image_ms = []
        for row in stored:
            t0 = time.perf_counter()
            images.search(Query(row), k=10)
            image_ms.append((time.perf_counter() - t0) * 1000)
        result = {f"{k} p50 ms": round(float(np.median(v)), 2) for k, v in times.items()}
        # the first round reads words never seen before; later rounds find their vectors cached
        result["read labels, first round p50 ms"] = round(float(np.median(times["read labels"][:len(TEXTS)])), 2)
        result["image search (same run) p50 ms"] = round(float(np.median(image_ms)), 2)
        ann = searcher.index.ann()
        result.update(items=len(coll), queries=len(texts), index=coll.active_index_spec,
                      joint_index=ann.spec if ann is not None else "exact")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

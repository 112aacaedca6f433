"""Word search with the shop vocabulary and spelling tolerance on and off, side by side.

    .venv/bin/python benchmarks/text_vocabulary.py --collection C --split-file RUN/split.csv \\
        [--shop-queries benchmarks/text_shop_queries.tsv] [--latency 60] [--out results.json]
    .venv/bin/python benchmarks/text_vocabulary.py --collection C --split-file RUN/split.csv --choose-mined

On the test split of the joint model's split file (the settings are the engine's defaults, chosen
on validation before the vocabulary existed): the label queries of ``vestis eval --text`` in the
titles' words and paraphrased, and the held-out shop-word queries, P@10 and mAP@10 per mode with
the query rewriting on and off; then latency, alternating on and off query by query: the query
embedding (rewriting included) and the hybrid search over the whole collection (p50, ms).
``--choose-mined`` instead scores the least precision of the words mined from the titles
(:mod:`vestis.store.mined`) on the validation split's label queries (mean hybrid P@10; keyword
without a joint model), none mined
included, and prints the grid: the shipped default is the best of it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from vestis.encoders.cpu import describe_cpu
from vestis.eval.run import EvalConfig, resolve_split
from vestis.eval.shop_words import read_shop_queries, score_shop_queries
from vestis.eval.text import Gallery, label_queries, label_query_sets
from vestis.search.text import (
    DEFAULT_LABEL_MARGIN,
    DEFAULT_LABEL_SIMILARITY,
    DEFAULT_LABEL_SPACE,
    Fusion,
    TextQuery,
    TextSearcher,
)
from vestis.store.factory import open_collection


def latency(searcher: TextSearcher, texts: list[str], reading: tuple[float, float, str]) -> dict[str, float]:
    times: dict[str, list[float]] = {}
    for rewriting in (True, False):  # warm both: caches of runs, the BM25 index, the speller
        searcher.keywords.rewriting = rewriting
        for text in texts:
            searcher.ranking(TextQuery(text, searcher.embed_text(text), labels=searcher.understand(text, *reading)), 10)
    for text in texts:
        for rewriting in (True, False):
            searcher.keywords.rewriting = rewriting
            searcher.keywords._rewrites.clear()  # each query rewritten afresh, as a new query would be
            t0 = time.perf_counter()
            vector = searcher.embed_text(text)
            t1 = time.perf_counter()
            searcher.ranking(TextQuery(text, vector, labels=searcher.understand(text, *reading)), 10)
            t2 = time.perf_counter()
            name = "vocabulary" if rewriting else "words as typed"
            times.setdefault(f"embed p50 ms, {name}", []).append((t1 - t0) * 1000)
            times.setdefault(f"hybrid search p50 ms, {name}", []).append((t2 - t1) * 1000)
    searcher.keywords.rewriting = True
    return {key: float(np.median(v)) for key, v in times.items()}


def choose_mined(searcher: TextSearcher, val: Gallery, sets: dict, fusion: Fusion,
                 reading: tuple[float, float, str]) -> dict[str, float]:
    """Mean P@10 of the validation label queries (hybrid; keyword without a joint model) per least
    precision of a mined word."""
    mode = "hybrid" if searcher.model is not None else "keyword"
    grid: dict[str, float] = {"mode": mode}
    for precision in (None, 1.0, 0.95, 0.9, 0.8, 0.7, 0.6):
        searcher.keywords.mined_precision = precision
        scores = label_queries(searcher, val, sets, fusion, reading, modes=(mode,))
        grid["none mined" if precision is None else f"precision >= {precision}"] = float(np.mean(
            [r[mode]["P@10"] for r in scores.values() if mode in r]))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--split-file", type=Path, required=True)
    parser.add_argument("--shop-queries", type=Path, default=Path(__file__).parent / "text_shop_queries.tsv")
    parser.add_argument("--latency", type=int, default=60, help="queries timed (0: none)")
    parser.add_argument("--min-items", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--choose-mined", action="store_true", help="score mined-word thresholds on validation")
    parser.add_argument("--modes", default="keyword,vector,hybrid", help="search modes scored (keyword needs no "
                        "joint model)")
    args = parser.parse_args()
    reading = (DEFAULT_LABEL_SIMILARITY, DEFAULT_LABEL_MARGIN, DEFAULT_LABEL_SPACE)
    fusion = Fusion()
    with open_collection(args.collection) as collection:
        searcher = TextSearcher.open(collection, threads=1)
        items = sorted(collection.iter_items(), key=lambda it: it.vid)
        split = resolve_split(collection, items, EvalConfig(group=["articleType", "baseColour"],
                                                              split_file=args.split_file))
        if args.choose_mined:
            val = Gallery([it for it in items if split.get(it.id) == "val"])
            print(json.dumps(choose_mined(searcher, val, label_query_sets(val, args.min_items), fusion, reading),
                             indent=2))
            return
        test = Gallery([it for it in items if split.get(it.id) == "test"])
        sets = label_query_sets(test, args.min_items)
        modes = tuple(args.modes.split(","))
        out: dict = {"collection": str(args.collection), "n_test": len(test.items),
                     "joint_model": searcher.model.version if searcher.model else None,
                     "cpu": describe_cpu(), "load average": os.getloadavg()[0]}
        for rewriting in (True, False):
            searcher.keywords.rewriting = rewriting
            out[f"label queries, {'vocabulary' if rewriting else 'words as typed'}"] = {
                name: {m: r[m] for m in modes if m in r}
                for name, r in label_queries(searcher, test, sets, fusion, reading, modes).items()}
        searcher.keywords.rewriting = True
        out["shop queries"] = score_shop_queries(searcher, read_shop_queries(args.shop_queries), test.items,
                                                 fusion, reading, modes)
        texts = [t for texts, _q, _g in sets.values() for t in texts]
        texts = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))[:args.latency]]
        if texts and "hybrid" in modes:
            out["latency"] = latency(searcher, texts, reading)
        out["load average after"] = os.getloadavg()[0]
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

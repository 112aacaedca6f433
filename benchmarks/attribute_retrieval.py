"""Attribute-specific retrieval figures: attribute MAP per attribute, and query latency.

    .venv/bin/python benchmarks/attribute_retrieval.py --run runs/clothing-attributes-asen \\
        --global-runs runs/bench-clothing-attributes/clothing-attributes-arcface \\
                      runs/bench-clothing-attributes/clothing-attributes-triplet
    .venv/bin/python benchmarks/attribute_retrieval.py --latency COLLECTION --queries 100

MAP (ASEN / RPF protocol, :func:`vestis.eval.protocols.attribute_map`): the test items of the
attribute run's split (by id, seed 0); for each attribute every labelled test item queries all
other labelled test items, AP over the full ranking; overall = the mean AP over all queries of all
attributes. Rows: (a) the backbone's ImageNet global embedding; (b) each trained global head given
(its test items must be the same); (c) the attribute model through its exported ONNX graph; and,
for colour attributes, the hand-made colour descriptor and its fusion with the learned colour
(what ``vestis search --attrs colour`` ranks by). Prints a markdown table, writes
``<run>/attribute_benchmark.json``.

Latency: query images are items of the collection (read from their sources); each query is timed
as decode + embed (one backbone pass and the attribute head) and the search with one and with three
attributes, and the global search for comparison. Single thread of onnxruntime, medians and p95.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn import functional as F

from vestis.encoders.attribute_encoder import AttributeEncoder
from vestis.encoders.onnx_encoder import EMBEDDING
from vestis.errors import VestisError
from vestis.eval.protocols import attribute_map, load_split
from vestis.search.attributes import COLOUR_FUSION
from vestis.train.attributes.features import load_attribute_data
from vestis.train.config import load_config
from vestis.train.heads import EmbeddingHead
from vestis.train.trainer import load_checkpoint

COLOUR_ATTRIBUTES = ("colour", "baseColour")


def global_head_vectors(run: Path, features: np.ndarray) -> np.ndarray:
    """Embeddings of a trained stage-1 global head (``best.pt``) over backbone features."""
    ckpt = load_checkpoint(run / "best.pt")
    head = EmbeddingHead(ckpt["in_dim"], ckpt["config"]["head"]["dim"])
    head.load_state_dict(ckpt["model"])
    with torch.no_grad():
        return F.normalize(head.eval()(torch.from_numpy(features)), dim=1).numpy()


def colour_vectors(sources: list[str]) -> np.ndarray:
    from vestis.data.images import decode_image
    from vestis.data.sources import read_source
    from vestis.encoders.colour import colour_descriptor

    return np.stack([colour_descriptor(decode_image(read_source(s), source=s)) for s in sources])


def attribute_figures(run: Path, global_runs: list[Path]) -> dict:
    cfg = load_config(run / "config.yaml", [f"output={run}"])
    data = load_attribute_data(cfg, progress=False)
    split = load_split(run / "split.csv")
    test = np.array([i for i, item_id in enumerate(data.items.ids) if split.get(item_id) == "test"])
    test_ids = {data.items.ids[i] for i in test}
    metadata = [data.items.metadata[i] for i in test]
    attributes = [a for a in data.attributes if any(a in m for m in metadata)]
    glob = np.asarray(data.global_vecs[test], np.float32)
    glob /= np.linalg.norm(glob, axis=1, keepdims=True)
    rows = {"(a) ImageNet global features": attribute_map(glob, metadata, attributes)}
    for other in global_runs:
        their_split = (
            yaml.safe_load((other / "config.yaml").read_text())["data"]["split_file"] or other / "split.csv"
        )
        theirs = {i for i, s in load_split(their_split).items() if s == "test"}
        if theirs != test_ids:
            raise VestisError(f"{other} was tested on other items than {run}: give runs with the same split")
        label = f"(b) {other.name} (global head)"
        rows[label] = attribute_map(global_head_vectors(other, glob), metadata, attributes)
    model = AttributeEncoder(run / "model.onnx")
    features = {model.feature_map: np.asarray(data.maps[test], np.float32), EMBEDDING: glob}
    per_attribute = model.embed_features(features)
    rows["(c) attribute model"] = attribute_map(
        {a: per_attribute[:, model.attributes.index(a)] for a in attributes}, metadata, attributes
    )
    colours = [a for a in attributes if a in COLOUR_ATTRIBUTES]
    if colours:
        descriptor = colour_vectors([data.items.sources[i] for i in test])
        rows["colour descriptor (hand-made)"] = attribute_map(descriptor, metadata, colours)
        fused = {  # the search's default for colour attributes: cos(learned) + COLOUR_FUSION x descriptor
            a: np.hstack([per_attribute[:, model.attributes.index(a)], np.sqrt(COLOUR_FUSION) * descriptor])
            for a in colours
        }
        rows["(c) fused with the colour descriptor (default)"] = attribute_map(fused, metadata, colours)
    return {"run": str(run), "test_items": len(test), "attributes": attributes, "rows": rows}


def markdown(result: dict) -> str:
    attributes, rows = result["attributes"], result["rows"]
    first = next(iter(rows.values()))["attributes"]
    lines = [
        "| method | overall | " + " | ".join(f"{a} ({first[a]['n_queries']})" for a in attributes) + " |",
        "|---|---|" + "---|" * len(attributes),
    ]
    for label, res in rows.items():
        cells = [
            f"{res['attributes'][a]['mAP'] * 100:.2f}" if a in res["attributes"] else "" for a in attributes
        ]
        overall = f"{res['attribute_mAP'] * 100:.2f}" if len(res["attributes"]) == len(attributes) else ""
        lines.append(f"| {label} | {overall} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latency(collection_dir: Path, n_queries: int, k: int = 10) -> dict:
    from vestis.data.sources import read_source
    from vestis.encoders import get_encoder
    from vestis.search.attributes import AttributeSearcher
    from vestis.search.searcher import Searcher
    from vestis.store.collection import Collection

    with Collection.open(collection_dir) as coll:
        encoder = get_encoder(coll.encoder_name, threads=1)
        searcher = AttributeSearcher.open(coll, backbone=encoder, threads=1)
        plain = Searcher(coll, encoder)
        attributes = searcher.attributes
        rng = np.random.default_rng(0)
        items = list(coll.iter_items())
        picks = [items[i] for i in rng.choice(len(items), size=min(n_queries, len(items)), replace=False)]
        searcher.index.table()
        coll.table()
        timings: dict[str, list[float]] = {
            "decode_embed": [],
            "search_1": [],
            "search_3": [],
            "global_search": [],
        }
        for it in picks:
            data = read_source(it.source)
            t0 = time.perf_counter()
            query = searcher.query_from_image(data, global_encoder=encoder)
            t1 = time.perf_counter()
            query.weights = {attributes[0]: 1.0}
            searcher.search(query, k=k)
            t2 = time.perf_counter()
            query.weights = dict.fromkeys(attributes[:3], 1.0)
            searcher.search(query, k=k)
            t3 = time.perf_counter()
            plain.search(query, k=k)
            t4 = time.perf_counter()
            for key, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                timings[key].append(dt * 1000)
        size = len(coll)
    return {
        "collection": str(collection_dir),
        "items": size,
        "queries": len(picks),
        "attributes": attributes[:3],
        "dim": searcher.index.dim,
        "ms": {
            key: {"p50": float(np.median(v)), "p95": float(np.percentile(v, 95))}
            for key, v in timings.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--run", type=Path, help="Attribute-model run directory (config.yaml, split.csv, model.onnx)."
    )
    ap.add_argument(
        "--global-runs", nargs="*", type=Path, default=[], help="Trained global-head run directories."
    )
    ap.add_argument("--latency", type=Path, help="Collection with an attribute index to time queries on.")
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()
    if args.run:
        result = attribute_figures(args.run, args.global_runs)
        (args.run / "attribute_benchmark.json").write_text(json.dumps(result, indent=2))
        print(f"\n{result['test_items']} test items; attribute MAP x 100 (test queries per attribute)\n")
        print(markdown(result))
    if args.latency:
        result = latency(args.latency, args.queries)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Street-to-shop quality (issue 29): photos of people as queries against a product catalogue, the
whole photo against each garment region (vestis.encoders.regions) and its variants.

    nice .venv/bin/vestis index ../shared/datasets/fashion-product-images-small.zip \\
        --collection /work/collections/fpi-small
    nice .venv/bin/python benchmarks/street_to_shop.py --gallery /work/collections/fpi-small \\
        --out benchmarks/results/street-to-shop

Queries: the Clothing Attribute photos that have a category (1,104). Relevant: a gallery item that
matches the query on every column of the label map
(configs/street-to-shop/clothing-attributes-to-fashion-product.yaml: category -> articleType,
gender -> gender). Exact search over the gallery's stored vectors (cosine), the queries embedded
with the collection's encoder. A mode that finds no region in a photo queries with the whole
photo, as search does. Each mode is also scored on a part of the catalogue (subCategory): the part
an upper-body garment belongs to (Topwear or Dress), and the part of the query's own category
(an oracle: what a shopper who names the garment gets), and with the region search's part split
(vestis.search.parts: the page shared between the catalogue's dresses and tops), the shipped
behaviour. Each figure is also given on the validation and test halves of the queries (the split's
thresholds were chosen on the validation half). Prints a markdown table with the paired
bootstrap interval of each mode's P@10 change over the whole photo, and writes ``results.json``
(the figures) and ``per-query.json`` (per mode and query, on the whole catalogue: which of the top
10 are relevant, for paired comparisons).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from vestis.data import open_catalogue
from vestis.data.images import decode_image
from vestis.encoders import get_encoder
from vestis.encoders.regions import RegionFinder, RegionSettings
from vestis.eval.metrics import change_interval, retrieval_metrics
from vestis.search.parts import PartSplit, PartSplits
from vestis.search.regions import region_scope
from vestis.search.results import SearchHit, SearchResponse
from vestis.store.factory import open_collection

K = 10
# Mode -> (region, how it is cut); "whole" is the photo as it is.
MODES: dict[str, tuple[str, RegionSettings] | None] = {
    "whole": None,
    "person": ("person", RegionSettings()),
    "person, background kept": ("person", RegionSettings(cut_out=False)),
    "top": ("top", RegionSettings()),
    "top, background kept": ("top", RegionSettings(cut_out=False)),
    "top, head hidden": ("top", RegionSettings(hide_head=True)),
    "top, tight (0.1 above shoulders, pad 0.03)": ("top", RegionSettings(above_shoulders=0.1, pad=0.03)),
    "top, loose (0.5 above shoulders, pad 0.15)": ("top", RegionSettings(above_shoulders=0.5, pad=0.15)),
    "top, longer (0.4 below hips)": ("top", RegionSettings(below_hips=0.4)),
    "top, framed 3:4": ("top", RegionSettings(frame=0.75)),
    "person, framed 3:4": ("person", RegionSettings(frame=0.75)),
}
# The catalogue parts (subCategory) each mode is also scored on: an upper-body region may show a
# top or a dress. "by category" uses the query's own label: the part its category belongs to.
PARTS = {"Topwear or Dress": lambda category: {"Topwear", "Dress"},
         "by category": lambda category: {"Dress"} if category == "dress" else {"Topwear"}}


def load_label_map(path: Path) -> dict[str, tuple[str, dict[str, set[str]]]]:
    """query column -> (gallery column, query value -> matching gallery values)."""
    spec = yaml.safe_load(path.read_text())
    return {column: (entry["gallery"], {str(k): set(v) for k, v in entry["values"].items()})
            for column, entry in spec["columns"].items()}


def relevance(queries: list[dict], gallery: dict[str, np.ndarray], label_map) -> np.ndarray:
    """Q x N bool: which gallery items are relevant to each query."""
    n = len(next(iter(gallery.values())))
    rel = np.ones((len(queries), n), bool)
    for i, meta in enumerate(queries):
        for column, (gallery_column, values) in label_map.items():
            if column in meta:
                rel[i] &= np.isin(gallery[gallery_column], sorted(values.get(meta[column], set())))
    return rel


def search(queries: np.ndarray, vectors: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Top-K gallery rows per query by cosine (the vectors are unit length), within ``allowed``."""
    scores = queries @ vectors.T
    if allowed is not None:
        scores[~allowed] = -np.inf
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def split_search(queries: np.ndarray, vectors: np.ndarray, part_of: np.ndarray, split: PartSplit) -> np.ndarray:
    """Top-K gallery rows per query as the region search ranks them (vestis.search.parts), each
    part searched exactly here."""
    main = np.isin(part_of, split.main)

    def search_part(scores: np.ndarray, part: dict[str, list[str]], n: int) -> SearchResponse:
        allowed = main if part[split.column] == split.main else np.isin(part_of, part[split.column])
        rows = np.flatnonzero(allowed)[np.argsort(-scores[allowed], kind="stable")[:n]]
        return SearchResponse([SearchHit(str(r), float(scores[r]), "", {}) for r in rows])

    return np.array([[int(h.id) for h in split.search(query, K, 0, partial(search_part, scores)).hits]
                     for query, scores in zip(queries, queries @ vectors.T, strict=True)])


def halves(n: int) -> np.ndarray:
    """The validation half of the queries (seeded): the part split's thresholds were chosen on it."""
    val = np.zeros(n, bool)
    val[np.random.default_rng(0).permutation(n)[:n // 2]] = True
    return val


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gallery", type=Path, required=True, help="Collection of the catalogue.")
    ap.add_argument("--queries", type=Path, default=Path("../shared/datasets/clothing-attributes.zip"))
    ap.add_argument("--label-map", type=Path,
                    default=Path("configs/street-to-shop/clothing-attributes-to-fashion-product.yaml"))
    ap.add_argument("--mode", action="append", choices=list(MODES), help="Modes to run (default: all).")
    ap.add_argument("--limit", type=int, help="Only the first N queries (a quick check).")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/street-to-shop"))
    args = ap.parse_args()
    label_map = load_label_map(args.label_map)

    collection = open_collection(args.gallery)
    table = collection.table()
    live = np.flatnonzero(table.alive)
    vectors, vids = table.vectors[live], table.ids[live]
    items = {item.vid: item for item in collection.iter_items()}
    columns = {g for g, _ in label_map.values()} | {"subCategory"}
    gallery = {c: np.array([str(items[v].metadata.get(c, "")) for v in vids.tolist()]) for c in columns}
    encoder = get_encoder(collection.encoder_source)
    splits = {name: PartSplits().get(collection, name, region_scope(name, {}, collection.metadata_columns()))
              for name in {spec[0] for spec in MODES.values() if spec}}

    photos = [i for i in open_catalogue(args.queries) if "category" in i.metadata][:args.limit]
    metas = [p.metadata for p in photos]
    rel = relevance(metas, gallery, label_map)
    parts = {name: np.stack([np.isin(gallery["subCategory"], sorted(part(m["category"]))) for m in metas])
             for name, part in PARTS.items()}
    images = [decode_image(p.read(), source=p.source) for p in photos]
    val = halves(len(photos))

    results: dict[str, dict] = {}
    per_query: dict[str, np.ndarray] = {}  # mode | part -> Q x K hits
    raw: dict[str, dict] = {}  # mode -> query id -> which of its top 10 are relevant ("0100000000")
    for mode in args.mode or list(MODES):
        spec = MODES[mode]
        finder = RegionFinder(settings=spec[1]) if spec else None
        started, queries, fallbacks = time.perf_counter(), [], 0
        for image in tqdm(images, desc=mode, leave=False):
            found = finder.find(image, (spec[0],)) if finder else []
            fallbacks += bool(finder) and not found
            queries.append(found[0].image if found else image)
        q = np.concatenate([encoder.embed_images(queries[i:i + 32]) for i in range(0, len(queries), 32)])
        split = splits.get(spec[0]) if spec else None
        for part, allowed in {"all": None, **parts, **({"part split": None} if split else {})}.items():
            top = split_search(q, vectors, gallery[split.column], split) if part == "part split" else \
                search(q, vectors, allowed)
            in_part = rel if allowed is None else rel & allowed
            hits = np.take_along_axis(in_part, top, 1)
            metrics = retrieval_metrics(hits, in_part.sum(1), [1, K])
            results[f"{mode} | {part}"] = {
                "mode": mode, "gallery part": part, "region": spec[0] if spec else None,
                "settings": spec[1].tag if spec else None, "whole-photo fallbacks": int(fallbacks),
                "seconds": round(time.perf_counter() - started, 1),
                **{f"{metric}@{K} {half}": round(float(value[rows].mean()), 4)
                   for half, rows in (("val", val), ("test", ~val))
                   for metric, value in (("P", hits.mean(1)), ("hit", hits.any(1)))},
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
            }
            per_query[f"{mode} | {part}"] = hits
            if part == "all":
                raw[mode] = {p.id: "".join("1" if h else "0" for h in row)
                             for p, row in zip(photos, hits, strict=True)}
        print(f"{mode}: P@{K} {results[f'{mode} | all'][f'P@{K}']:.3f} "
              f"hit@{K} {results[f'{mode} | all'][f'R@{K}']:.3f}", flush=True)

    print(f"\n{len(photos)} queries, gallery {args.gallery} ({len(vids):,} items, "
          f"{collection.encoder_name})\n")
    answerable = rel.sum(1) > 0
    baseline = per_query.get("whole | all")
    print(f"| mode | gallery part | P@{K} | P@{K} change over the whole photo [95 % interval] | hit@{K} | "
          f"mAP@{K} | P@1 | fallbacks | P@{K} / hit@{K} val half | test half |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        change = "–"
        if baseline is not None and key != "whole | all":
            low, high = change_interval(per_query[key][answerable].mean(1), baseline[answerable].mean(1))
            r["P@10 change interval"] = [round(low, 4), round(high, 4)]
            change = f"{r[f'P@{K}'] / results['whole | all'][f'P@{K}'] - 1:+.0%} [{low:+.0%}, {high:+.0%}]"
        print(f"| {r['mode']} | {r['gallery part']} | {r[f'P@{K}']:.3f} | {change} | {r[f'R@{K}']:.3f} | "
              f"{r[f'mAP@{K}']:.3f} | {r['P@1']:.3f} | {r['whole-photo fallbacks']} | "
              f"{r[f'P@{K} val']:.3f} / {r[f'hit@{K} val']:.3f} | {r[f'P@{K} test']:.3f} / {r[f'hit@{K} test']:.3f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"queries": str(args.queries), "gallery": str(args.gallery), "label_map": str(args.label_map),
         "encoder": collection.encoder_version, "n_queries": len(photos), "n_gallery": len(vids),
         "results": results}, indent=1))
    (args.out / "per-query.json").write_text(json.dumps(raw, separators=(",", ":")))


if __name__ == "__main__":
    main()

"""Encoder figures: end-to-end embedding throughput, single-image latency, and leave-one-out
retrieval quality of each preprocessing choice on Fashion Product Images.

    .venv/bin/python benchmarks/encoders.py [--source ../shared/datasets/fashion-product-images-300.zip]
        [--encoders efficientnet-lite0 mobilenetv2] [--choices imagenet/pad tf/pad imagenet/crop]
        [--limit N] [--batch-size 32] [--threads N] [--workers N]

Images are read straight from the zip. Relevant = same articleType + baseColour, the query
excluded. Two conventions are printed: ``P@10 all`` / ``hit@1 all`` average over every query
(the convention of the reference figures P@10 = 0.180, R@1 = 0.240 for ImageNet EfficientNet-Lite0),
``P@10`` / ``R@1`` are ``vestis.eval.protocols.leave_one_out`` (queries with a relevant item only).
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import time
import zipfile
from pathlib import Path

import numpy as np

from vestis.data.images import decode_image
from vestis.encoders import PreprocessSpec, get_encoder
from vestis.encoders.pipeline import embed_items
from vestis.eval.protocols import leave_one_out, rank

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(ROOT.parent / "shared/datasets/fashion-product-images-300.zip"))
    ap.add_argument("--encoders", nargs="+", default=["efficientnet-lite0", "mobilenetv2"])
    ap.add_argument("--choices", nargs="+", default=["imagenet/pad", "imagenet/crop", "tf/pad", "tf/crop"],
                    help="normalisation/resize pairs; tf is only meaningful for EfficientNet-Lite0")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    zf = zipfile.ZipFile(args.source)
    styles = {r["id"]: r for r in csv.DictReader(io.StringIO(zf.read("styles.csv").decode()))}
    members = sorted(n for n in zf.namelist() if n.endswith(".jpg"))[:args.limit]
    print("| encoder version | images/s | latency ms | P@10 all | hit@1 all | P@10 | R@1 |")
    print("|---|---|---|---|---|---|---|")
    for name in args.encoders:
        for choice in args.choices:
            if choice.startswith("tf/") and name != "efficientnet-lite0":
                continue
            norm, resize = choice.split("/")
            enc = get_encoder(name, threads=args.threads, preprocess=PreprocessSpec.named(norm, resize=resize))
            items = [(m, (lambda m=m: zf.read(m))) for m in members]
            start = time.perf_counter()
            batches = list(embed_items(enc, items, batch_size=args.batch_size, workers=args.workers, progress=False))
            rate = len(items) / (time.perf_counter() - start)
            keys = [k for b in batches for k in b.keys]
            vectors = np.concatenate([b.vectors for b in batches])

            latencies = []
            for m in members[:50]:  # one query photo: decode + preprocess + embed
                data = zf.read(m)
                t = time.perf_counter()
                enc.embed_images([decode_image(data)])
                latencies.append(time.perf_counter() - t)

            labels = np.array([f"{styles[k[7:-4]]['articleType']}|{styles[k[7:-4]]['baseColour']}" for k in keys],
                              dtype=object)
            top = rank(vectors, vectors, 10, exclude_self=np.arange(len(keys)))[1]
            hits = labels[top] == labels[:, None]
            project = leave_one_out(vectors, labels, ks=(1, 10))
            print(f"| {enc.version} | {rate:.1f} | {1000 * statistics.median(latencies):.1f} | {hits.mean():.3f} "
                  f"| {hits[:, 0].mean():.3f} | {project['P@10']:.3f} | {project['R@1']:.3f} |", flush=True)


if __name__ == "__main__":
    main()

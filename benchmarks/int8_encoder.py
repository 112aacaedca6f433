"""The 8-bit encoder against its float32 backbone, side by side in one run: leave-one-out P@10,
top-10 ranking overlap, embedding agreement and inference speed (batch 1 and batch 32).

    .venv/bin/python benchmarks/int8_encoder.py [--fpi ../shared/datasets/fashion-product-images-300.zip]
        [--fmnist-limit 5000] [--float efficientnet-lite0] [--int8 efficientnet-lite0-int8] [--threads N]

Fashion Product Images: relevant = same articleType + baseColour; Fashion-MNIST (Debian's
``dataset-fashion-mnist``, the first ``--fmnist-limit`` images of each split, as ``vestis index
fashion-mnist --limit``): relevant = same label. P@10 averages over every query (queries alone in
their group score 0, the convention of BENCHMARKS.md's quality table). Overlap = |top-10 float32
∩ top-10 int8| / 10, averaged over queries. Each image is decoded and preprocessed once and
embedded by both encoders. Speed: the same 64 preprocessed images through both models, batch 1
and batch 32 alternating between the models, medians of ``--runs`` rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import islice
from pathlib import Path

import numpy as np

from vestis.data import open_catalogue
from vestis.data.images import decode_image
from vestis.encoders import get_encoder
from vestis.encoders.cpu import describe_cpu
from vestis.eval.protocols import group_labels, leave_one_out, rank

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 256


def embed_both(encoders: list, catalogue) -> tuple[list[np.ndarray], list[dict]]:
    """Every catalogue image embedded by each encoder (they share the preprocessing)."""
    vectors: list[list[np.ndarray]] = [[] for _ in encoders]
    metadata: list[dict] = []
    items = iter(catalogue)
    while chunk := list(islice(items, CHUNK)):
        batch = np.stack([encoders[0].preprocess(decode_image(it.read(), source=it.source)) for it in chunk])
        for out, enc in zip(vectors, encoders):
            out.append(enc.embed_batch(batch))
        metadata += [it.metadata for it in chunk]
        print(f"  {len(metadata)} images", flush=True)
    return [np.concatenate(v) for v in vectors], metadata


def agreement(vectors: list[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """P@10 of the reference (``vectors[0]``) and the other embedding, top-10 overlap and cosine."""
    p10 = [leave_one_out(v, labels, (10,), include_queries_without_relevant=True)["P@10"] for v in vectors]
    everyone = np.arange(len(labels))
    tops = [rank(v, v, 10, exclude_self=everyone)[1] for v in vectors]
    cosine = (vectors[0] * vectors[1]).sum(axis=1)
    return {"images": len(labels), "P@10 reference": p10[0], "P@10": p10[1], "difference": p10[1] - p10[0],
            "top-10 overlap": float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*tops)])),
            "cosine mean": float(cosine.mean()), "cosine 1st pct": float(np.percentile(cosine, 1))}


def quality(name: str, vectors: list[np.ndarray], labels: np.ndarray) -> list[str]:
    m = agreement(vectors, labels)
    row = (f"| {name} | {m['images']:,} | {m['P@10 reference']:.4f} | {m['P@10']:.4f} | {m['difference']:+.4f} | "
           f"{m['top-10 overlap']:.3f} | {m['cosine mean']:.4f} / {m['cosine 1st pct']:.4f} |")
    return [row]


def timings(encoders: list, images: np.ndarray, runs: int) -> dict[tuple[int, int], float]:
    """Median ms per image of each encoder (by position) at batch 1 and 32: the same 64 images,
    every round running each encoder in turn, so load falls on all of them alike."""
    times: dict[tuple[int, int], list[float]] = {(i, b): [] for i in range(len(encoders)) for b in (1, 32)}
    for enc in encoders:
        enc.embed_batch(images[:8])  # warm-up
    for _ in range(runs):
        for i, enc in enumerate(encoders):
            start = time.perf_counter()
            for j in range(16):
                enc.embed_batch(images[j:j + 1])
            times[i, 1].append((time.perf_counter() - start) / 16 * 1000)
            start = time.perf_counter()
            enc.embed_batch(images[:32])
            enc.embed_batch(images[32:64])
            times[i, 32].append((time.perf_counter() - start) / 64 * 1000)
    return {key: statistics.median(v) for key, v in times.items()}


def speed(encoders: list, images: np.ndarray, runs: int) -> list[str]:
    med = timings(encoders, images, runs)
    return [f"| batch {b} | {med[0, b]:.2f} | {med[1, b]:.2f} | {med[0, b] / med[1, b]:.2f}x |" for b in (1, 32)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fpi", default=str(ROOT.parent / "shared/datasets/fashion-product-images-300.zip"))
    ap.add_argument("--fmnist-limit", type=int, default=5000, help="images per split; 0 skips Fashion-MNIST")
    ap.add_argument("--float", default="efficientnet-lite0")
    ap.add_argument("--int8", default="efficientnet-lite0-int8")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()

    encoders = [get_encoder(args.float, threads=args.threads), get_encoder(args.int8, threads=args.threads)]
    print(f"CPU: {describe_cpu()}\nencoders: {encoders[0].version} vs {encoders[1].version}\n")
    rows = []
    first = None
    for name, source, columns, options in [
        ("Fashion Product Images 300", args.fpi, ["articleType", "baseColour"], {}),
        (f"Fashion-MNIST ({args.fmnist_limit:,} per split)", "fashion-mnist", ["label"], {"limit": args.fmnist_limit}),
    ]:
        if "MNIST" in name and not args.fmnist_limit:
            continue
        print(name, flush=True)
        catalogue = open_catalogue(source, **options)
        if first is None:
            it = iter(catalogue)
            first = np.stack([encoders[0].preprocess(decode_image(x.read())) for x in islice(it, 64)])
        vectors, metadata = embed_both(encoders, catalogue)
        rows += quality(name, vectors, group_labels(metadata, columns))
    print("\n| dataset | images | P@10 float32 | P@10 int8 | difference | top-10 overlap | cosine mean / 1st pct |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| ms per image | float32 | int8 | speed-up |\n|---|---|---|---|")
    print("\n".join(speed(encoders, first, args.runs)))


if __name__ == "__main__":
    main()

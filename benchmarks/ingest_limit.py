"""Ingest against the encoder's own limit, side by side in one run: images/s of indexing a fresh
collection (read, hash, decode, preprocess, colour, inference, SQLite, vector cache and index
writes) against images/s of the encoder alone (``embed_batch`` on already preprocessed batches of
the same images), for each split of the cores between onnxruntime and the decoding threads.

    .venv/bin/python benchmarks/ingest_limit.py [--source ../shared/datasets/fashion-product-images-300.zip]
        [--limit 1000] [--encoder NAME] [--splits 2:2 2:1 1:1] [--rounds 2]

A split ``T:W`` is T onnxruntime intra-op threads and W decoding threads. Each round runs, for
every split, the encoder alone then the ingest; figures are medians over rounds, and the ratio
is ingest / encoder-alone of the same split and round (median). The last line runs
``vestis index`` as a fresh process on the same images (process start and model load included).
The first ``--limit`` images (by name) are copied into a scratch zip that every run indexes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import shutil
import tempfile
import time
import zipfile
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np

from vestis.data import open_catalogue
from vestis.data.images import decode_image
from vestis.encoders import DEFAULT_ENCODER, get_encoder
from vestis.encoders.pipeline import embed_items
from vestis.store.ingest import index_catalogue, open_or_create

ROOT = Path(__file__).resolve().parents[1]


def encoder_alone(encoder, batch: np.ndarray, n: int, batch_size: int) -> float:
    """Images/s of inference over ``n`` images (the preprocessed ``batch`` repeated as needed)."""
    start = time.perf_counter()
    for done in range(0, n, batch_size):
        take = min(batch_size, n - done)
        offset = done % len(batch) if done % len(batch) + take <= len(batch) else 0
        encoder.embed_batch(batch[offset:offset + take])
    return n / (time.perf_counter() - start)


def subset_zip(source: str, limit: int, out: Path) -> Path:
    """The first ``limit`` images of a Fashion Product Images zip (and its styles.csv) as a new zip."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        images = sorted(n for n in zin.namelist() if n.endswith(".jpg"))[:limit]
        for name in ["styles.csv", *images]:
            zout.writestr(name, zin.read(name))
    return out


def _embed_with(encoder, items, *, batch_size, progress, stored, workers):
    """The local embedder with ``workers`` decoding threads."""
    return embed_items(encoder, ((item.id, item.read) for item in items), batch_size=batch_size,
                       progress=progress, total=len(items), stored=stored, workers=workers)


def ingest(encoder, source: Path, workers: int, scratch: Path) -> float:
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        collection = open_or_create(Path(tmp) / "c", encoder, None)
        report = index_catalogue(collection, open_catalogue(source), encoder, progress=False,
                                 embed=partial(_embed_with, workers=workers))
        collection.close()
    return report.embedded / report.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(ROOT.parent / "shared/datasets/fashion-product-images-300.zip"))
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--encoder", default=DEFAULT_ENCODER)
    ap.add_argument("--splits", nargs="+", default=["2:2", "2:1", "1:1"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--scratch", default=tempfile.gettempdir())
    args = ap.parse_args()

    splits = [tuple(int(x) for x in s.split(":")) for s in args.splits]
    encoders = {t: get_encoder(args.encoder, threads=t) for t in {t for t, _ in splits}}
    scratch = Path(tempfile.mkdtemp(dir=args.scratch))
    source = subset_zip(args.source, args.limit, scratch / "subset.zip")
    items = list(islice(open_catalogue(source), 256))
    batch = np.stack([encoders[splits[0][0]].preprocess(decode_image(it.read())) for it in items])
    results: dict[tuple[int, int], dict[str, list[float]]] = {s: {"alone": [], "ingest": []} for s in splits}
    print(f"{args.encoder}, {args.limit} images of {args.source}, {os.cpu_count()} cores, "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    for round_ in range(args.rounds):
        for threads, workers in splits:
            enc = encoders[threads]
            alone = encoder_alone(enc, batch, args.limit, args.batch_size)
            rate = ingest(enc, source, workers, scratch)
            results[threads, workers]["alone"].append(alone)
            results[threads, workers]["ingest"].append(rate)
            print(f"  round {round_ + 1} split {threads}:{workers}: encoder alone {alone:.1f}/s, "
                  f"ingest {rate:.1f}/s ({rate / alone:.0%})", flush=True)
    print("\n| onnxruntime threads : decoding threads | encoder alone, images/s | ingest, images/s | ingest / encoder |")
    print("|---|---|---|---|")
    for (threads, workers), r in results.items():
        ratio = statistics.median(i / a for i, a in zip(r["ingest"], r["alone"]))
        print(f"| {threads}:{workers} | {statistics.median(r['alone']):.1f} | {statistics.median(r['ingest']):.1f} "
              f"| {ratio:.0%} |")
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "vestis", "index", str(source), "-c", str(Path(tmp) / "c"),
                              "--encoder", args.encoder, "--json"],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        wall = time.perf_counter() - start
        report = json.loads(out.stdout)
        alone = encoder_alone(encoders[max(encoders)], batch, args.limit, args.batch_size)
    print(f"\n`vestis index` (fresh process): {args.limit / wall:.1f} images/s end to end ({wall:.1f} s), "
          f"{report['images_per_second']} images/s in its ingest loop; encoder alone right after: {alone:.1f}/s "
          f"({args.limit / wall / alone:.0%} end to end, {report['images_per_second'] / alone:.0%} ingest loop)")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()

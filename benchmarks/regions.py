"""Garment-region finding time per photo (issue 29), beside the default encoder's embedding time of
the same photos, measured in the same run.

    nice .venv/bin/python benchmarks/regions.py --threads 1 \
        --catalogue ../shared/datasets/fashion-product-images-300.zip

For each Clothing Attribute photo (people in the street, about 266 x 400): the time of
``RegionFinder.find`` (all four regions, cut out on the backdrop) and of embedding the whole photo
alone (batch of 1) with ``efficientnet-lite0-int8``, both on ``--threads`` threads; one warm-up
photo first. Prints p50 / p90 / mean in milliseconds, the CPU and the load average. With
``--catalogue``, also how many of a catalogue's photos (product shots, some on a model) get a
person, per subCategory.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import time

import numpy as np

from vestis.data import open_catalogue
from vestis.data.images import decode_image
from vestis.encoders import DEFAULT_ENCODER, get_encoder
from vestis.encoders.regions import get_region_finder


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default="../shared/datasets/clothing-attributes.zip")
    ap.add_argument("--limit", type=int, default=500, help="Photos to time (default 500).")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--catalogue", help="A catalogue to count the photos with a person in.")
    args = ap.parse_args()
    items = list(open_catalogue(args.photos))[:args.limit]
    images = [decode_image(i.read(), source=i.source) for i in items]
    finder = get_region_finder(args.threads)
    encoder = get_encoder(DEFAULT_ENCODER, threads=args.threads)
    finder.find(images[0])
    encoder.embed_images([images[0]])
    find_ms, embed_ms, found = [], [], 0
    for image in images:
        t0 = time.perf_counter()
        found += bool(finder.find(image))
        t1 = time.perf_counter()
        encoder.embed_images([image])
        t2 = time.perf_counter()
        find_ms.append((t1 - t0) * 1000)
        embed_ms.append((t2 - t1) * 1000)
    load = os.getloadavg()
    print(f"{len(images)} photos ({found} with a person), {args.threads} thread(s), {cpu_name()}, "
          f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print("| step | p50 ms | p90 ms | mean ms |")
    print("|---|---|---|---|")
    steps = ((f"region finding ({finder.version})", find_ms), (f"embedding ({encoder.version})", embed_ms))
    for name, ms in steps:
        p50, p90 = np.percentile(ms, [50, 90])
        print(f"| {name} | {p50:.1f} | {p90:.1f} | {np.mean(ms):.1f} |")
    if args.catalogue:
        counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        for item in open_catalogue(args.catalogue):
            count = counts[str(item.metadata.get("subCategory", ""))]
            count[0] += bool(finder.find(decode_image(item.read(), source=item.source), ("person",)))
            count[1] += 1
        with_person, total = (sum(c[i] for c in counts.values()) for i in (0, 1))
        print(f"\n{args.catalogue}: a person in {with_person} of {total} photos ({with_person / total:.1%})")
        print("| subCategory | photos | with a person |")
        print("|---|---|---|")
        for name, (hit, n) in sorted(counts.items(), key=lambda kv: -kv[1][1]):
            print(f"| {name} | {n} | {hit} ({hit / n:.0%}) |")


if __name__ == "__main__":
    main()

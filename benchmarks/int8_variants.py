"""8-bit variants of a built-in image encoder side by side with its float32 export on this CPU:
leave-one-out P@10 on Fashion Product Images (same articleType + baseColour), top-10 overlap and
cosine with float32, and speed at batch 1 and 32. Which variant is best depends on the CPU: with
VNNI onnxruntime multiplies 8-bit integers natively; on AVX2 alone it adds pairs of u8 x s8
products in 16 bits, which full-range weights overflow (see ``vestis.encoders.quantize``).

    .venv/bin/python benchmarks/int8_variants.py [--fpi ../shared/datasets/fashion-product-images-300.zip]
        [--backbone efficientnet-lite0] [--threads 2] [--runs 5] [--out DIR]

onnxruntime chooses its kernels from the CPU at run time (no option caps the instruction set), so
the AVX2 figures need a CPU without VNNI. Each variant is quantized from the same float32 export,
calibrated on the same generated images as the shipped ones, into ``--out`` (reused when present).
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_encoder import embed_both, quality, timings  # noqa: E402  (the int8 benchmark's measurements)

from vestis.data import open_catalogue  # noqa: E402
from vestis.data.images import decode_image  # noqa: E402
from vestis.encoders import BUILTIN_PREPROCESSING, get_encoder  # noqa: E402
from vestis.encoders.cpu import describe_cpu  # noqa: E402
from vestis.encoders.onnx_encoder import INPUT, OnnxEncoder, builtin_model_path, open_session  # noqa: E402
from vestis.encoders.quantize import (  # noqa: E402
    RECIPES, SUFFIX, VNNI_SUFFIX, calibration_batches, quantize_model, quantized_name)
from vestis.eval.protocols import group_labels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, str | bool]] = {
    "u8s7-perchannel-qdq (efficientnet-lite0-int8)": RECIPES[SUFFIX][1],
    "u8s8-perchannel-qdq (efficientnet-lite0-int8-vnni)": RECIPES[VNNI_SUFFIX][1],
    "u8s7-pertensor-qdq": {"per_channel": False},
    "u8s7-perchannel-qoperator": {"quant_format": "QOperator"},
    "s8s8-perchannel-qdq": {"reduce_range": False, "activation_type": "QInt8"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fpi", default=str(ROOT.parent / "shared/datasets/fashion-product-images-300.zip"))
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("int8-variants"), help="where the variants are written")
    args = ap.parse_args()
    spec = BUILTIN_PREPROCESSING[quantized_name(args.backbone)]
    source = builtin_model_path(args.backbone)
    encoders = [get_encoder(args.backbone, threads=args.threads)]
    args.out.mkdir(parents=True, exist_ok=True)
    for label, options in VARIANTS.items():
        path = args.out / f"{args.backbone}-{label.split()[0]}.onnx"
        if not path.exists():
            started = time.perf_counter()
            quantize_model(source, path, calibration_batches(spec), INPUT, **options)
            print(f"quantized {label} in {time.perf_counter() - started:.0f} s", flush=True)
        encoders.append(OnnxEncoder(open_session(path, args.threads), name=label, version=label, preprocess=spec))
    print(f"CPU: {describe_cpu()}", flush=True)
    catalogue = open_catalogue(args.fpi)
    first = np.stack([encoders[0].preprocess(decode_image(x.read())) for x in islice(iter(catalogue), 64)])
    vectors, metadata = embed_both(encoders, catalogue)
    labels = group_labels(metadata, ["articleType", "baseColour"])
    print("\n| variant | images | P@10 float32 | P@10 int8 | difference | top-10 overlap | cosine mean / 1st pct |")
    print("|---|---|---|---|---|---|---|")
    for enc, v in zip(encoders[1:], vectors[1:]):
        print(quality(enc.name, [vectors[0], v], labels)[0])
    med = timings(encoders, first, args.runs)  # every encoder in each round, float32 included
    print(f"\n| variant | batch 1 ms | speed-up | batch 32 ms per image | speed-up |\n|---|---|---|---|---|\n"
          f"| float32 | {med[0, 1]:.2f} | 1.00x | {med[0, 32]:.2f} | 1.00x |")
    for i, enc in enumerate(encoders[1:], 1):
        print(f"| {enc.name} | {med[i, 1]:.2f} | {med[0, 1] / med[i, 1]:.2f}x | {med[i, 32]:.2f} | "
              f"{med[0, 32] / med[i, 32]:.2f}x |")


if __name__ == "__main__":
    main()

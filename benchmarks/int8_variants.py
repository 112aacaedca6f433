"""8-bit variants of a built-in image encoder side by side with its float32 export on this CPU:
leave-one-out P@10 on Fashion Product Images (same articleType + baseColour), top-10 overlap and
cosine with float32, and speed at batch 1 and 32. Which variant is best depends on the CPU: with
VNNI onnxruntime multiplies 8-bit integers natively; on AVX2 alone it adds pairs of u8 x s8
products in 16 bits, which full-range weights overflow (see ``vestis.encoders.quantize``).

    .venv/bin/python benchmarks/int8_variants.py [--fpi ../shared/datasets/fashion-product-images-300.zip]
        [--backbone efficientnet-lite0] [--threads 2] [--runs 5] [--out DIR]
    .venv/bin/python benchmarks/cpu_mask/run.py .venv/bin/python benchmarks/int8_variants.py --out DIR

The second form runs onnxruntime's AVX2 kernels on a CPU with AVX-512 and VNNI (CPUID masked; see
``benchmarks/cpu_mask``). The variants: quantization recipes (activation and weight types,
per-channel or per-tensor weights, QDQ or QOperator format, depthwise convolutions left in
float32), each quantized from the same float32 export and calibrated on the same generated images
as the shipped ones (the shipped recipes are vestis's own cached files), and onnxruntime session
options on the shipped portable recipe (spinning intra-op threads, a lower graph optimisation
level). Writes ``int8-variants.json`` and ``int8-variants.md`` to ``--out``; quantized models go
to ``--out``/models and are reused when present.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_encoder import agreement, embed_both, timings  # the int8 benchmark's measurements

from vestis.data import open_catalogue
from vestis.data.images import decode_image
from vestis.encoders import BUILTIN_PREPROCESSING, get_encoder
from vestis.encoders.cpu import FLAGS_ENV, describe_cpu
from vestis.encoders.onnx_encoder import INPUT, OnnxEncoder, builtin_model_path, open_session
from vestis.encoders.quantize import (
    RECIPES,
    SUFFIX,
    VNNI_SUFFIX,
    calibration_batches,
    quantize_model,
    quantized_name,
)
from vestis.eval.protocols import group_labels

ROOT = Path(__file__).resolve().parents[1]
DEPTHWISE = "depthwise convolutions"  # stands for their node names, read from the float32 graph
# label -> quantize_model options beyond the portable recipe's (activations / weights, granularity, format)
RECIPE_VARIANTS: dict[str, dict] = {
    "u8s7-perchannel-qdq": RECIPES[SUFFIX][1],
    "u8s8-perchannel-qdq": RECIPES[VNNI_SUFFIX][1],
    "u8s7-pertensor-qdq": {"per_channel": False},
    "u8s7-perchannel-qoperator": {"quant_format": "QOperator"},
    "s8s8-perchannel-qdq": {"reduce_range": False, "activation_type": "QInt8"},
    "s8s7-perchannel-qdq": {"activation_type": "QInt8"},
    "u8u8-perchannel-qdq": {"reduce_range": False, "weight_type": "QUInt8"},
    "u8s7-perchannel-qdq-depthwise-float": {"nodes_to_exclude": DEPTHWISE},
}
SHIPPED = {"u8s7-perchannel-qdq": False, "u8s8-perchannel-qdq": True}  # label -> vnni, for quantized_name
# label -> (model: a recipe label or "float32", intra-op threads spin, graph optimisation level)
SESSION_VARIANTS = {
    "float32, spinning threads": ("float32", True, "ORT_ENABLE_ALL"),
    "u8s7-perchannel-qdq, spinning threads": ("u8s7-perchannel-qdq", True, "ORT_ENABLE_ALL"),
    "u8s7-perchannel-qdq, extended graph optimisation": ("u8s7-perchannel-qdq", False, "ORT_ENABLE_EXTENDED"),
}
P10_BOUND = 0.005  # the quality bound: |P@10 int8 - P@10 float32|


def depthwise_convolutions(model: Path) -> list[str]:
    """Names of the grouped (depthwise) Conv nodes of an ONNX graph."""
    return [n.name for n in onnx.load(str(model)).graph.node
            if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def custom_session(path: Path, threads: int, spinning: bool, level: str) -> ort.InferenceSession:
    """A session like :func:`open_session`'s but for spinning and the graph optimisation level."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def recipe_models(backbone: str, directory: Path) -> dict[str, Path]:
    """Every recipe variant's model: vestis's cached file for the shipped ones, else quantized here."""
    spec = BUILTIN_PREPROCESSING[quantized_name(backbone)]
    source = builtin_model_path(backbone)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for label, options in RECIPE_VARIANTS.items():
        if label in SHIPPED:
            paths[label] = builtin_model_path(quantized_name(backbone, vnni=SHIPPED[label]))
            continue
        paths[label] = path = directory / f"{backbone}-{label}.onnx"
        if options.get("nodes_to_exclude") == DEPTHWISE:
            options = {**options, "nodes_to_exclude": depthwise_convolutions(source)}
        if not path.exists():
            started = time.perf_counter()
            quantize_model(source, path, calibration_batches(spec), INPUT, **options)
            print(f"quantized {label} in {time.perf_counter() - started:.0f} s", flush=True)
    return paths


def markdown(results: dict) -> str:
    head = (f"CPU: {results['cpu']}{' (CPUID masked)' if results['cpuid_masked'] else ''}; "
            f"{results['threads']} threads; load average {results['load_before']:.2f} before, "
            f"{results['load_after']:.2f} after; {results['images']:,} images; float32 P@10 "
            f"{results['float32']['P@10']:.4f}, {results['float32']['batch 1 ms']:.2f} ms per image at batch 1, "
            f"{results['float32']['batch 32 ms']:.2f} at batch 32.")
    columns = ("| variant | P@10 | vs float32 | top-10 overlap | cosine mean / 1st pct | batch 1 ms | speed-up "
               "| batch 32 ms | speed-up |")
    lines = [head, "", columns, "|---|---|---|---|---|---|---|---|---|"]
    for label, v in results["variants"].items():
        within = "" if abs(v["difference"]) <= P10_BOUND else " (outside 0.005)"
        lines.append(f"| {label} | {v['P@10']:.4f} | {v['difference']:+.4f}{within} | {v['top-10 overlap']:.3f} | "
                     f"{v['cosine mean']:.3f} / {v['cosine 1st pct']:.3f} | {v['batch 1 ms']:.2f} | "
                     f"{v['speed-up batch 1']:.2f}x | {v['batch 32 ms']:.2f} | {v['speed-up batch 32']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fpi", default=str(ROOT.parent / "shared/datasets/fashion-product-images-300.zip"))
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("int8-variants"), help="results, and the models in models/")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    spec = BUILTIN_PREPROCESSING[quantized_name(args.backbone)]
    paths = {"float32": builtin_model_path(args.backbone), **recipe_models(args.backbone, args.out / "models")}
    encoders = [get_encoder(args.backbone, threads=args.threads)]
    for label in RECIPE_VARIANTS:
        encoders.append(OnnxEncoder(open_session(paths[label], args.threads), name=label, version=label, preprocess=spec))
    for label, (model, spinning, level) in SESSION_VARIANTS.items():
        session = custom_session(paths[model], args.threads, spinning, level)
        encoders.append(OnnxEncoder(session, name=label, version=label, preprocess=spec))
    print(f"CPU: {describe_cpu()}", flush=True)
    catalogue = open_catalogue(args.fpi)
    first = np.stack([encoders[0].preprocess(decode_image(x.read())) for x in islice(iter(catalogue), 64)])
    vectors, metadata = embed_both(encoders, catalogue)
    labels = group_labels(metadata, ["articleType", "baseColour"])
    med = timings(encoders, first, args.runs)  # every encoder in each round, float32 included
    variants = {}
    for i, (enc, v) in enumerate(zip(encoders[1:], vectors[1:]), 1):
        m = agreement([vectors[0], v], labels)
        variants[enc.name] = {**m, "batch 1 ms": med[i, 1], "speed-up batch 1": med[0, 1] / med[i, 1],
                              "batch 32 ms": med[i, 32], "speed-up batch 32": med[0, 32] / med[i, 32]}
    results = {"cpu": describe_cpu(), "cpuid_masked": FLAGS_ENV in os.environ, "threads": args.threads,
               "runs": args.runs, "dataset": args.fpi, "images": len(labels),
               "load_before": load_before, "load_after": os.getloadavg()[0],
               "float32": {"P@10": next(iter(variants.values()))["P@10 reference"],
                           "batch 1 ms": med[0, 1], "batch 32 ms": med[0, 32]},
               "variants": variants}
    (args.out / "int8-variants.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "int8-variants.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

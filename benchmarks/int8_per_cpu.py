"""float32 and the 8-bit recipes this CPU can run, end to end: ``vestis index`` of a catalogue into
a new collection with each encoder (images per second, the whole command timed) and ``vestis
eval`` of what it built (P@10, same articleType + baseColour), side by side in one run; then where
an ingested image's time goes. The recipes: the portable ``efficientnet-lite0-int8`` and, on a CPU
with VNNI, ``efficientnet-lite0-int8-vnni`` (refused elsewhere).

    .venv/bin/python benchmarks/int8_per_cpu.py [--fpi ../shared/datasets/fashion-product-images-300.zip]
        [--rounds 2] [--breakdown 256] [--out DIR]
    .venv/bin/python benchmarks/cpu_mask/run.py .venv/bin/python benchmarks/int8_per_cpu.py --out DIR

The second form measures onnxruntime's AVX2 kernels on a CPU with AVX-512 and VNNI (CPUID masked,
``benchmarks/cpu_mask``). Each round indexes with every encoder, the order reversed every other
round (A B C, C B A, ...), so a load that changes during the run weighs on all alike. The models
are built and their sessions opened once before the first timing. The load average is recorded
beside every run.

The breakdown times each stage of ingest alone, in this process, on the first ``--breakdown``
images, as CPU milliseconds per image (all threads; ``vestis index`` spreads the stages over every
core, so CPU time is what they share): reading the bytes, sha256, decoding, preprocessing, the
colour descriptor, each model (batches of 32, onnxruntime's threads as ``vestis index`` uses
them) and the catalogue scan + write (``index_catalogue`` of the whole catalogue with the
embedding replaced by stored vectors). From it, Amdahl's law: the end-to-end gain an 8-bit model
can give is (shared + float32 model) / (shared + 8-bit model).

Writes ``int8-per-cpu.json`` and ``int8-per-cpu.md`` to ``--out`` (collections in ``--out``/collections).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from vestis.data import open_catalogue
from vestis.data.images import decode_image
from vestis.encoders import BUILTIN_PREPROCESSING, default_encoder, get_encoder
from vestis.encoders.colour import COLOUR_DIM, colour_descriptor
from vestis.encoders.cpu import FLAGS_ENV, describe_cpu, has_vnni
from vestis.encoders.pipeline import EmbeddedBatch
from vestis.encoders.quantize import quantized_name
from vestis.store.ingest import index_catalogue, open_or_create

ROOT = Path(__file__).resolve().parents[1]
VESTIS = str(Path(sys.executable).with_name("vestis"))
BATCH = 32  # vestis index's default batch size
SHARED_STAGES = ("read", "sha256", "decode", "preprocess", "colour descriptor", "catalogue scan + write")


def vestis(*args: str) -> dict:
    """Run a vestis command with ``--json`` and return its report."""
    done = subprocess.run([VESTIS, *args, "--json"], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children: unlike the wall clock,
    hardly moved by other processes' load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_ms(work: Callable[[], object], per: int) -> tuple[object, float]:
    """``work()``'s result and the process CPU time it took (every thread), in ms per ``per`` items."""
    started = time.process_time()
    out = work()
    return out, (time.process_time() - started) * 1000 / per


def stored_vectors(dim: int) -> Callable[..., Iterator[EmbeddedBatch[str]]]:
    """An embedder (``index_catalogue``'s ``embed``) that hands out random unit vectors without
    reading any image: what is left of ingest is the catalogue scan and the write."""
    def embed(encoder, items, *, batch_size: int, progress: bool, stored) -> Iterator[EmbeddedBatch[str]]:
        rng = np.random.default_rng(0)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            vectors = rng.standard_normal((len(chunk), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            colours = rng.random((len(chunk), COLOUR_DIM), dtype=np.float32)
            digests = [hashlib.sha256(it.id.encode()).hexdigest() for it in chunk]
            yield EmbeddedBatch([it.id for it in chunk], vectors, colours, digests, [])
    return embed


def breakdown(fpi: str, names: list[str], n: int, rounds: int, out: Path) -> dict[str, float]:
    """CPU ms per image of each ingest stage (see the module docstring); models: the median of ``rounds``."""
    specs = {BUILTIN_PREPROCESSING[name] for name in names}
    assert len(specs) == 1, "the encoders compared must share their preprocessing"
    spec = specs.pop()
    items = list(islice(iter(open_catalogue(fpi)), n))
    stages: dict[str, float] = {}
    data, stages["read"] = cpu_ms(lambda: [it.read() for it in items], n)
    _, stages["sha256"] = cpu_ms(lambda: [hashlib.sha256(d).hexdigest() for d in data], n)
    images, stages["decode"] = cpu_ms(lambda: [decode_image(d) for d in data], n)
    batches, stages["preprocess"] = cpu_ms(lambda: [np.stack([spec(im) for im in images[i:i + BATCH]])
                                                    for i in range(0, n, BATCH)], n)
    _, stages["colour descriptor"] = cpu_ms(lambda: [colour_descriptor(im) for im in images], n)
    encoders = [get_encoder(name) for name in names]
    for enc in encoders:
        enc.embed_batch(batches[0])  # warm-up
    model: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, enc in zip(names, encoders):
            model[name].append(cpu_ms(lambda e=enc: [e.embed_batch(b) for b in batches], n)[1])
    for name in names:
        stages[f"model: {name}"] = float(np.median(model[name]))
    catalogue = open_catalogue(fpi)
    shutil.rmtree(out, ignore_errors=True)
    collection = open_or_create(out, encoders[0], None)
    report, ms = cpu_ms(lambda: index_catalogue(collection, catalogue, encoders[0], progress=False,
                                                embed=stored_vectors(encoders[0].dim)), 1)
    collection.close()
    stages["catalogue scan + write"] = ms / report.added
    return stages


def markdown(results: dict) -> str:
    names = list(results["encoders"])
    lines = [(f"CPU: {results['cpu']}{' (CPUID masked)' if results['cpuid_masked'] else ''}; dataset "
             f"{Path(results['dataset']).name}; `vestis index` into a new collection, whole command timed."), "",
             ("| encoder | images | images/s end to end (each round) | P@10 | speed-up vs float32 | "
             "ingest alone (no start-up) | CPU seconds (each round) | by CPU time | load average (each run) |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        e = results["encoders"][name]
        rates = " / ".join(f"{run['images_per_second']:.1f}" for run in e["runs"])
        loads = ", ".join(f"{run['load_before']:.1f}-{run['load_after']:.1f}" for run in e["runs"])
        cpus = " / ".join(f"{run['cpu_seconds']:.1f}" for run in e["runs"])
        lines.append(f"| {name} | {e['runs'][0]['items']:,} | {rates} | {e['P@10']:.4f} | "
                     f"{e['speed-up']:.2f}x | {e['speed-up, ingest alone']:.2f}x | {cpus} | "
                     f"{e['speed-up, CPU time']:.2f}x | {loads} |")
    b = results["breakdown"]
    shared = sum(b[s] for s in SHARED_STAGES)
    lines += ["", (f"Where an image's time goes (CPU ms per image, each stage alone, first {results['breakdown_images']} "
              "images; catalogue scan + write over the whole catalogue):"), "",
              "| stage | CPU ms per image | share with float32 |", "|---|---|---|"]
    total = shared + b[f"model: {names[0]}"]
    for stage, ms in b.items():
        lines.append(f"| {stage} | {ms:.2f} | {ms / total:.0%} |" if not stage.startswith("model") or
                     stage == f"model: {names[0]}" else f"| {stage} | {ms:.2f} | |")
    lines += ["", ("| 8-bit encoder | model speed-up (CPU time) | end-to-end bound (Amdahl) | measured end to end "
              "| measured, ingest alone |"), "|---|---|---|---|---|"]
    for name in names[1:]:
        bound = total / (shared + b[f"model: {name}"])
        lines.append(f"| {name} | {b[f'model: {names[0]}'] / b[f'model: {name}']:.2f}x | {bound:.2f}x | "
                     f"{results['encoders'][name]['speed-up']:.2f}x | "
                     f"{results['encoders'][name]['speed-up, ingest alone']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fpi", default=str(ROOT.parent / "shared/datasets/fashion-product-images-300.zip"))
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--breakdown", type=int, default=256, help="images timed stage by stage")
    ap.add_argument("--out", type=Path, default=Path("int8-per-cpu"), help="results, and the collections")
    args = ap.parse_args()
    names = [args.backbone, quantized_name(args.backbone)] + (
        [quantized_name(args.backbone, vnni=True)] if has_vnni() else [])
    for name in names:  # cached model and optimised graph built before anything is timed
        get_encoder(name)
    print(f"CPU: {describe_cpu()}; default encoder for a new collection here: {default_encoder()}", flush=True)
    collections = args.out / "collections"
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            collection = collections / f"{name}-{r}"
            shutil.rmtree(collection, ignore_errors=True)
            load = os.getloadavg()[0]
            started, cpu_started = time.perf_counter(), children_cpu()
            report = vestis("index", args.fpi, "-c", str(collection), "--encoder", name)
            seconds = time.perf_counter() - started
            run = {"round": r, "items": report["added"], "seconds": round(seconds, 2),
                   "cpu_seconds": round(children_cpu() - cpu_started, 2),
                   "images_per_second": round(report["added"] / seconds, 1),
                   "ingest_seconds": report["seconds"], "embedding_images_per_second": report["images_per_second"],
                   "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
            runs[name].append(run)
            print(f"{name} round {r}: {run}", flush=True)
    results = {"cpu": describe_cpu(), "cpuid_masked": FLAGS_ENV in os.environ, "default_encoder": default_encoder(),
               "dataset": args.fpi, "encoders": {}}
    float_seconds = sum(run["seconds"] for run in runs[names[0]])
    float_ingest = sum(run["ingest_seconds"] for run in runs[names[0]])  # without start-up and evaluation
    float_cpu = sum(run["cpu_seconds"] for run in runs[names[0]])
    for name in names:
        metrics = vestis("eval", "-c", str(collections / f"{name}-0"), "--group", "articleType,baseColour",
                         "--k", "1,10,50")
        results["encoders"][name] = {"runs": runs[name], "P@1": metrics["P@1"], "P@10": metrics["P@10"],
                                     "mAP@10": metrics["mAP@10"],
                                     "speed-up": float_seconds / sum(run["seconds"] for run in runs[name]),
                                     "speed-up, ingest alone": float_ingest / sum(run["ingest_seconds"]
                                                                                  for run in runs[name]),
                                     "speed-up, CPU time": float_cpu / sum(run["cpu_seconds"] for run in runs[name])}
    print("breaking the time down ...", flush=True)
    results["breakdown_images"] = args.breakdown
    results["breakdown_load_before"] = os.getloadavg()[0]
    results["breakdown"] = breakdown(args.fpi, names, args.breakdown, 3, args.out / "breakdown-collection")
    results["breakdown_load_after"] = os.getloadavg()[0]
    shutil.rmtree(args.out / "breakdown-collection", ignore_errors=True)
    (args.out / "int8-per-cpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "int8-per-cpu.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

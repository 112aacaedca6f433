"""End-to-end query latency on a collection (``vestis bench query``).

Warm path: an :class:`~vestis.search.engine.Engine` loads the collection, its index and the
encoder once; each run takes one query image's encoded bytes through the steps of
``Engine.query`` and ``Engine.search``, timed one by one: decode, preprocess (resize, crop, normalise), embed (the network), colour (the
colour descriptor, when the collection stores colours), search (index or exact scan) and fetch
metadata (SQLite). Reported as p50 / p99 per step over all runs.

Cold start: a fresh ``python -m vestis search --json`` process per run, timed from process start to
its answer (interpreter, imports, opening the collection, loading the model, one query); the
median over runs. The OS file cache is warm after the first run, as on a server that restarts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vestis.bench.ann import child_env
from vestis.data.images import decode_image, is_image_name
from vestis.encoders.colour import colour_descriptor
from vestis.errors import VestisError
from vestis.search.engine import Engine
from vestis.search.results import Query

STAGES = ("decode", "preprocess", "embed", "colour", "search", "fetch_metadata", "total")
WARMUP = 5


def load_query_images(sources: list[Path], limit: int = 200) -> list[tuple[str, bytes]]:
    """(name, encoded bytes) of up to ``limit`` query images: image files, the images in folders
    (sorted by path) and inside ``.zip`` archives (in archive order)."""
    images: list[tuple[str, bytes]] = []
    for source in sources:
        if not source.exists():
            raise VestisError(f"no such query image or archive: {source}")
        if source.suffix.lower() == ".zip":
            with zipfile.ZipFile(source) as archive:
                names = [n for n in archive.namelist() if is_image_name(n) and not n.startswith("__MACOSX")]
                images += [(f"{source.name}:{n}", archive.read(n)) for n in names[:limit - len(images)]]
        elif source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file() and is_image_name(p.name))
            images += [(str(p), p.read_bytes()) for p in files[:limit - len(images)]]
        else:
            images.append((str(source), source.read_bytes()))
        if len(images) >= limit:
            break
    if not images:
        raise VestisError("no query images found in " + ", ".join(map(str, sources)))
    return images[:limit]


def time_queries(engine: Engine, images: list[tuple[str, bytes]], *, runs: int, k: int = 10
                 ) -> dict[str, list[float]]:
    """Milliseconds per step (see ``STAGES``) for ``runs`` queries cycling through ``images``."""
    engine.load()
    encoder, collection = engine.encoder, engine.collection
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for run in range(WARMUP + runs):
        name, data = images[run % len(images)]
        t0 = time.perf_counter()
        image = decode_image(data, source=name)
        t1 = time.perf_counter()
        batch = encoder.preprocess(image)[None]
        t2 = time.perf_counter()
        vector = encoder.embed_batch(batch)[0]
        t3 = time.perf_counter()
        colour = colour_descriptor(image) if collection.colour_dim else None
        t4 = time.perf_counter()
        timings: dict[str, float] = {}
        engine.search(Query(vector, colour), k=k, timings=timings)
        t5 = time.perf_counter()
        if run < WARMUP:
            continue
        steps = (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        for stage, seconds in zip(STAGES[:4], steps, strict=True):
            samples[stage].append(seconds * 1000)
        samples["search"].append(timings["search"])
        samples["fetch_metadata"].append(timings["fetch_metadata"])
        samples["total"].append((t5 - t0) * 1000)
    return samples


def cold_start(collection_dir: Path, image: Path, *, runs: int = 5, k: int = 10) -> dict[str, Any]:
    """Wall time of fresh ``vestis search --json`` processes (process start to answer), and the
    medians of the steps the command reports about itself."""
    command = [sys.executable, "-m", "vestis", "search", "--collection", str(collection_dir), str(image),
               "-k", str(k), "--json"]
    walls, reported = [], []
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run(command, check=False, capture_output=True, text=True, env=child_env())
        walls.append((time.perf_counter() - t) * 1000)
        if done.returncode != 0:
            raise VestisError(f"`{' '.join(command)}` failed: {done.stderr.strip()[-500:]}")
        reported.append(json.loads(done.stdout)["timings_ms"])
    steps = {key: float(np.median([r[key] for r in reported])) for key in reported[0]}
    return {"runs": runs, "wall_ms_median": float(np.median(walls)), "wall_ms_min": float(min(walls)),
            "wall_ms_max": float(max(walls)), "reported_ms_median": steps,
            "command": " ".join(["vestis", *command[3:]])}


def run_query_bench(collection_dir: Path, sources: list[Path], *, runs: int = 200, cold_runs: int = 5,
                    k: int = 10, command: str = "") -> dict[str, Any]:
    """Warm per-step latency and cold start of image queries on the collection at ``collection_dir``."""
    images = load_query_images(sources, limit=runs)
    with Engine.open(collection_dir) as engine:
        collection = engine.collection
        samples = time_queries(engine, images, runs=runs, k=k)
        info = {"path": str(collection_dir), "items": len(collection), "index": collection.active_index_spec,
                "encoder": collection.encoder_name}
    sizes = Counter("{}x{}".format(*decode_image(data).size) for _, data in images)
    result = {"collection": info, "command": command, "runs": runs, "query_images": len(images),
              "image_sizes": dict(sizes.most_common()),
              "warm_ms": {stage: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}
                          for stage, v in samples.items()}}
    if cold_runs:
        with tempfile.TemporaryDirectory() as tmp:
            name, data = images[0]
            image = Path(tmp) / Path(name.rsplit(":", 1)[-1]).name
            image.write_bytes(data)
            result["cold_start"] = cold_start(collection_dir, image, runs=cold_runs, k=k)
    return result


def markdown(result: dict[str, Any]) -> str:
    """The warm per-step table and the cold start, as markdown."""
    c = result["collection"]
    lines = [(f"Collection {c['path']}: {c['items']:,} items, index `{c['index']}`, encoder {c['encoder']}; "
              f"{result['runs']} queries over {result['query_images']} images ("
              + ", ".join(f"{n} of {size}" for size, n in result["image_sizes"].items()) + ")."),
             "", "| step | p50 ms | p99 ms |", "|---|---|---|"]
    lines += [f"| {stage} | {v['p50']:.2f} | {v['p99']:.2f} |" for stage, v in result["warm_ms"].items()]
    cold = result.get("cold_start")
    if cold:
        steps = ", ".join(f"{key} {value:.0f}" for key, value in cold["reported_ms_median"].items())
        lines += ["", (f"Cold start (`{cold['command']}`, fresh process to answer): median "
                       f"{cold['wall_ms_median']:.0f} ms over {cold['runs']} runs (min {cold['wall_ms_min']:.0f}, "
                       f"max {cold['wall_ms_max']:.0f}); inside the command (ms, median): {steps}.")]
    return "\n".join(lines) + "\n"

"""Re-embedding without downtime: `vestis reindex` of a copy of a collection while another process
searches it by image the whole time.

    .venv/bin/python benchmarks/reindex.py --collection /work/collections/fpi-small \\
        --encoder efficientnet-lite0 [--limit 5000] --out benchmarks/results/reindex/RUN.json

The collection is copied to a scratch folder (``--limit N``: only its first N items are kept), then
a second process (the load: an :class:`~vestis.search.engine.Engine`, as a server holds it) runs image
searches of the collection's own photos back to back while this one reindexes to ``--encoder``.
Reported: the load's answers and errors (the goal: none), its latency before and after the switch
and how many answers came from each encoder, the reindex's time and embedding rate, the time of the
switch transaction, and the disk the collection folder used above its starting size (peak during
the run, and after it). The load shares the cores with the reindex, so both are slower than alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUERIES = 50


def disk_bytes(folder: Path) -> int:
    """What the folder's files take on disk (allocated blocks)."""
    return sum(os.lstat(os.path.join(root, f)).st_blocks * 512 for root, _d, files in os.walk(folder) for f in files)


def cpu_name() -> str:
    flags, name = set(), platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    return f"{name} ({os.cpu_count()} cores; {', '.join(f for f in ('avx2', 'avx512_vnni') if f in flags)})"


def load(collection: Path, stop: Path, out: Path) -> None:
    """Image searches back to back until ``stop`` exists; their outcomes go to ``out`` (JSON)."""
    from vestis.data.sources import read_source
    from vestis.search.engine import Engine
    from vestis.search.query import SearchQuery

    engine = Engine.open(collection, threads=1)
    images = [read_source(it.source) for it in engine.collection.page(0, QUERIES)]
    answers: list[tuple[float, str, float]] = []  # (time, encoder version, ms)
    errors: list[str] = []
    i = 0
    while not stop.exists():
        t0 = time.perf_counter()
        try:
            outcome = engine.run(SearchQuery(image=images[i % len(images)], k=10))
            assert outcome.response.hits, "no hits"
            answers.append((time.time(), engine.encoder.version, (time.perf_counter() - t0) * 1000))
        except Exception as error:  # noqa: BLE001 - every failure is what this counts
            errors.append(f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}")
        i += 1
    out.write_text(json.dumps({"answers": answers, "errors": errors}))


def subset(collection: Path, limit: int) -> None:
    """Keep the first ``limit`` items, the database compacted (so that the disk the reindex adds is
    not hidden in the pages the removed items freed)."""
    import sqlite3

    from vestis.store.collection import Collection

    with Collection.open(collection) as coll:
        extra = [it.id for it in coll.page(limit, len(coll))]
        coll.remove(extra)
        coll.persist()
    with sqlite3.connect(collection / "collection.sqlite") as conn:
        conn.execute("VACUUM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--encoder", required=True, help="the encoder to re-embed with")
    parser.add_argument("--limit", type=int, help="keep only the first N items of the copy")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    parser.add_argument("--load", type=Path, help=argparse.SUPPRESS)  # the load process: its collection
    parser.add_argument("--stop", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--load-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load(args.load, args.stop, args.load_out)
        return

    from vestis.encoders import get_encoder
    from vestis.store.collection import Collection
    from vestis.store.reindex import reindex
    from vestis.store.reindex_stage import LocalStage

    work = Path(tempfile.mkdtemp(prefix="vestis-reindex-", dir=args.work))
    copy = work / "collection"
    print(f"copying {args.collection} to {copy}", flush=True)
    shutil.copytree(args.collection, copy, ignore=shutil.ignore_patterns("index.lock", ".derived.lock"))
    if args.limit:
        subset(copy, args.limit)
    encoder = get_encoder(args.encoder)
    start_bytes = disk_bytes(copy)

    peak = [start_bytes]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                peak[0] = max(peak[0], disk_bytes(copy))
            except FileNotFoundError:  # a file renamed or removed while walking
                pass
            time.sleep(0.5)

    switch_s: list[float] = []
    switch = LocalStage.switch

    def timed_switch(self: LocalStage, keep_old: bool) -> bool:
        t0 = time.perf_counter()
        try:
            return switch(self, keep_old)
        finally:
            switch_s.append(time.perf_counter() - t0)

    LocalStage.switch = timed_switch  # type: ignore[method-assign]
    stop, load_out = work / "stop", work / "load.json"
    loader = subprocess.Popen([sys.executable, __file__, "--collection", str(copy), "--encoder", args.encoder,
                               "--load", str(copy), "--stop", str(stop), "--load-out", str(load_out)], cwd=ROOT)
    time.sleep(20)  # the load opens the collection and its encoder, and answers before the reindex starts
    load_before = os.getloadavg()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with Collection.open(copy) as coll:
        items, previous = len(coll), coll.encoder_version
        t0 = time.perf_counter()
        report = reindex(coll, encoder, batch_size=32, progress=True)
        seconds = time.perf_counter() - t0
    switched_at = time.time()
    time.sleep(10)  # the load answers from the new encoder for a while
    sampling.set()
    sampler.join()
    stop.touch()
    loader.wait()
    outcome = json.loads(load_out.read_text())
    answers, errors = outcome["answers"], outcome["errors"]
    before = [ms for _t, version, ms in answers if version == previous]
    after = [ms for _t, version, ms in answers if version == encoder.version]
    figures = {
        "collection": str(args.collection), "items": items, "from": previous, "to": encoder.version,
        "reindex_s": round(seconds, 1), "images_per_s": round(report.embedded / seconds, 1),
        "switch_transaction_s": [round(s, 3) for s in switch_s], "rounds": report.rounds,
        "start_disk_mb": round(start_bytes / 1e6, 1), "peak_extra_disk_mb": round((peak[0] - start_bytes) / 1e6, 1),
        "extra_disk_after_mb": round((disk_bytes(copy) - start_bytes) / 1e6, 1),
        "load_answers": len(answers), "load_errors": len(errors), "load_errors_first": errors[:3],
        "load_answers_old_encoder": len(before), "load_answers_new_encoder": len(after),
        "load_last_old_answer_after_switch_s": round(max((t for t, v, _ms in answers if v == previous),
                                                          default=switched_at) - switched_at, 3),
        "load_p50_ms_before": round(float(np.percentile(before, 50)), 1) if before else None,
        "load_p95_ms_before": round(float(np.percentile(before, 95)), 1) if before else None,
        "load_p50_ms_after": round(float(np.percentile(after, 50)), 1) if after else None,
        "load_max_ms": round(max(ms for _t, _v, ms in answers), 1) if answers else None,
        "cpu": cpu_name(), "load_average_at_start": [round(x, 2) for x in load_before],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Scale-out figures: Ray ingest against the single-process path, and Milvus against the local store.

    .venv/bin/python benchmarks/scale_out.py [--source ../shared/datasets/fashion-product-images-300.zip]
        [--rounds 2] [--queries 200] [--out benchmarks/results/scale-out]

In one run, on this machine:

1. ingest of SOURCE into fresh local collections, single-process and on a local Ray cluster of
   every core (one encoder actor per core), alternating (single, Ray, Ray, single, ...) so that
   load drifts hit both; the Ray cluster is started once, outside the timed runs (its start is
   reported on its own); wall time and CPU seconds (the driver; for Ray also every Ray process)
   of each, since on a machine shared with other work the wall-time ratio mostly says which side
   got more of the CPU; the vectors of both are compared;
2. the same catalogue into Milvus Lite through ``index_catalogue`` (the ``vestis index`` path),
   then ``vestis eval`` quality (P@10, mAP@10, articleType+baseColour) on the local and the
   Milvus Lite collection;
3. Milvus's HNSW index (M=32, efConstruction=200, ef=64) against exact search: mean top-10 overlap
   over QUERIES items ("more like this", the item left out);
4. bytes per item on disk for both stores.

Milvus Lite's query times are not Milvus's (Lite is an embedded, pure-Python development build);
none is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vestis.data import open_catalogue
from vestis.encoders import get_encoder
from vestis.eval.run import EvalConfig, evaluate_collection
from vestis.store.factory import open_collection
from vestis.store.ingest import index_catalogue, open_or_create
from vestis.store.ray_ingest import RayEmbedder

ROOT = Path(__file__).resolve().parents[1]


def vectors_by_id(coll) -> dict[str, np.ndarray]:
    vids, vectors, _ = coll.table().view
    row = {int(v): r for r, v in enumerate(vids)}
    return {it.id: vectors[row[it.vid]] for it in coll.iter_items()}


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids: list[int]) -> dict[tuple[int, int], float]:
    """(pid, start time) -> user + system CPU seconds, from /proc (threads included)."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[(pid, int(fields[19]))] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class CpuMeter:
    """CPU seconds used by this process, or by it and every descendant (Ray's daemons and actors),
    sampled twice a second so that processes which exit during the run still count."""

    def __init__(self, tree: bool) -> None:
        self.tree, self._seen, self._stop = tree, {}, threading.Event()
        self._start = self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> dict[tuple[int, int], float]:
        now = _cpu_seconds(_descendants(os.getpid()) if self.tree else [os.getpid()])
        for key, value in now.items():
            self._seen[key] = max(self._seen.get(key, 0.0), value)
        return now

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(v - self._start.get(k, 0.0) for k, v in self._seen.items())


def ingest(location: str, source: str, encoder, embed=None) -> tuple[float, int, float, float]:
    """(seconds, items, seconds spent committing, CPU seconds) of one fresh ingest; the CPU seconds
    of a Ray ingest include every Ray process (daemons, actors) besides the driver."""
    coll = open_or_create(location, encoder, None)
    upsert, spent = coll.upsert, [0.0]

    def timed_upsert(items):
        t = time.perf_counter()
        vids = upsert(items)
        spent[0] += time.perf_counter() - t
        return vids

    coll.upsert = timed_upsert
    meter = CpuMeter(tree=embed is not None)
    t0 = time.perf_counter()
    report = index_catalogue(coll, open_catalogue(source), encoder, progress=False, embed=embed)
    seconds = time.perf_counter() - t0
    cpu = meter.stop()
    coll.close()
    return seconds, report.added, spent[0], cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(ROOT.parent / "shared/datasets/fashion-product-images-300.zip"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scale-out")
    args = ap.parse_args()
    import ray

    encoder = get_encoder()
    cores = os.cpu_count() or 1
    result: dict = {"command": "python " + " ".join(sys.argv), "cores": cores,
                    "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        result["ray_start_s"] = time.perf_counter() - t
        embed = RayEmbedder(address=None, actors=cores)
        runs: dict[str, list[dict]] = {"single": [], "ray": []}
        order = [("single", "ray"), ("ray", "single")] * args.rounds
        for n, pair in enumerate(order[: args.rounds]):
            for kind in pair:
                location = str(tmp / f"{kind}-{n}")
                seconds, items, commit, cpu = ingest(location, args.source, encoder,
                                                     embed if kind == "ray" else None)
                runs[kind].append({"seconds": seconds, "items": items, "commit_s": commit, "cpu_s": cpu,
                                   "location": location, "load_average": os.getloadavg()[0]})
                print(f"{kind}: {items} items in {seconds:.1f} s ({items / seconds:.1f}/s), {cpu:.0f} CPU s, "
                      f"commits {commit:.2f} s", flush=True)
        ray.shutdown()
        single_s = statistics.median(r["seconds"] for r in runs["single"])
        ray_s = statistics.median(r["seconds"] for r in runs["ray"])
        items = runs["single"][0]["items"]
        single_cpu = statistics.median(r["cpu_s"] for r in runs["single"])
        ray_cpu = statistics.median(r["cpu_s"] for r in runs["ray"])
        with open_collection(runs["single"][0]["location"]) as a, open_collection(runs["ray"][0]["location"]) as b:
            va, vb = vectors_by_id(a), vectors_by_id(b)
            same_items = set(va) == set(vb)
            max_diff = max(float(np.max(np.abs(va[i] - vb[i]))) for i in va)
        commit_rate = items / statistics.median(r["commit_s"] for r in runs["single"])
        result["ingest"] = {
            "items": items, "single_s": single_s, "ray_s": ray_s, "single_per_s": items / single_s,
            "ray_per_s": items / ray_s, "ray_overhead": ray_s / single_s - 1, "actors": cores,
            "per_actor_per_s": items / ray_s / cores, "single_cpu_s": single_cpu, "ray_cpu_s": ray_cpu,
            "ray_cpu_overhead": ray_cpu / single_cpu - 1, "images_per_cpu_s_ray": items / ray_cpu,
            "same_items": same_items, "max_abs_diff": max_diff,
            "local_commit_per_s": commit_rate, "runs": runs,
        }
        print(json.dumps(result["ingest"], indent=1, default=str), flush=True)

        lite = f"milvus-lite:{tmp / 'fpi.db'}"
        seconds, _items, commit, _cpu = ingest(lite, args.source, encoder)
        result["milvus_lite_ingest"] = {"seconds": seconds, "commit_s": commit, "commit_per_s": items / commit}
        cfg = EvalConfig(group=["articleType", "baseColour"], ks=[10])
        quality = {}
        for name, location in (("local", runs["single"][0]["location"]), ("milvus-lite", lite)):
            with open_collection(location) as coll:
                metrics, _ = evaluate_collection(coll, cfg)
                quality[name] = {k: metrics[k] for k in ("P@10", "mAP@10", "n_queries")}
        result["quality"] = quality
        print(json.dumps(quality, indent=1), flush=True)

        with open_collection(lite) as coll:
            coll.set_index_spec("hnsw")
            ids = [it.id for it in coll.iter_items()]
            table = vectors_by_id(coll)
            matrix = np.stack([table[i] for i in ids])
            rng = np.random.default_rng(0)
            overlaps = []
            for q in rng.choice(len(ids), size=min(args.queries, len(ids)), replace=False):
                query = coll.get(ids[q])
                scores = matrix @ matrix[q]
                scores[q] = -np.inf
                exact = {ids[r] for r in np.argsort(-scores)[:10]}
                vids, _scores, _n = coll.search_vectors(matrix[q], 10, exclude=[query.vid])
                found = {it.id for it in coll.items_by_vid(vids.tolist())}
                overlaps.append(len(found & exact) / 10)
            result["milvus_hnsw"] = {"spec": coll.active_index_spec, "queries": len(overlaps),
                                     "top10_overlap": float(np.mean(overlaps)), "min_overlap": float(min(overlaps))}
        print(json.dumps(result["milvus_hnsw"], indent=1), flush=True)
        local_dir = Path(runs["single"][0]["location"])
        result["bytes_per_item"] = {"local": disk_bytes(local_dir) / items,
                                    "milvus_lite": disk_bytes(tmp / "fpi.db") / items}
        print(json.dumps(result["bytes_per_item"], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale-out.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written {args.out / 'scale-out.json'}")


if __name__ == "__main__":
    main()

"""Resident memory of the ``auto`` index at 1,000,000 items: float32 vectors read into memory
(today's layout) against vectors memory-mapped from the saved file (``load_index(..., mmap=True)``).

    .venv/bin/python benchmarks/memory_1m.py --like COLLECTION --index-dir INDEX_DIR --out benchmarks/results/memory-1m

COLLECTION is a collection folder (or an ``.npy`` of embeddings), e.g. one made with ``vestis index
../shared/datasets/fashion-product-images-300.zip -c fpi300``; INDEX_DIR a scratch folder for the built
index (about 7 GB at 1M items), reused by later runs.

The vectors are **generated** (``vestis.index.synthetic``, fitted to the embeddings of ``--like``);
1,000 held-out generated queries with exact ground truth (``vestis bench ann``'s prepared dataset).
The index (``auto`` at this size: HNSW32 over 8-bit codes, 2k candidates re-scored exactly) is built
once in a child process and saved to ``--index-dir``. Each layout is then measured in a fresh
``python`` process: load, recall@10 (tie-aware) and single-query latency (1 thread) at each
``--ef`` (after a first pass over the queries at the index's own ``efSearch``, which pages in the
rows they re-score, as on a warm server: its p50 is reported as "first pass"), and its memory from ``/proc/self/status``: peak (``VmHWM``) and steady resident memory
after the queries (``VmRSS``: anonymous + file pages mapped in, ``RssAnon`` and ``RssFile``
apart). File pages of a mapped vector file are the OS's cache, shared and reclaimable; they are
counted in VmRSS all the same, so the target is checked against VmRSS.

With ``--collection-dir DIR`` the same vectors become a whole collection instead (SQLite, colour
descriptors, the vector table and the ``auto`` index, built once by ``Collection.persist``), and a
fresh process opens it and answers the queries through ``vestis.search.searcher.Searcher``, as
``vestis serve`` does: the figure a user sees for a million-item collection.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 10


def status() -> dict[str, int]:
    """Memory lines of /proc/self/status, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) * 1024
    return out


def child_build(dataset_dir: str, index_dir: str, threads: int) -> dict[str, Any]:
    import faiss
    from threadpoolctl import threadpool_limits

    from vestis.index import make_index
    from vestis.index.auto import ANN_SPEC

    faiss.omp_set_num_threads(threads)
    base = np.load(Path(dataset_dir) / "base.npy", mmap_mode="r")
    tmp = Path(index_dir + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with threadpool_limits(threads):
        t = time.perf_counter()
        index = make_index(ANN_SPEC, base.shape[1])
        index.add(np.arange(len(base), dtype=np.int64), base)
        index.build()
        build_s = time.perf_counter() - t
        index.save(tmp)
    tmp.rename(index_dir)
    return {"spec": index.spec, "build_s": build_s, "memory": status()}


def child_measure(dataset_dir: str, index_dir: str, mmap: bool, efs: list[int]) -> dict[str, Any]:
    import faiss
    from threadpoolctl import threadpool_limits

    from vestis.index import load_index

    faiss.omp_set_num_threads(1)
    queries = np.load(Path(dataset_dir) / "queries.npy")
    start = status()
    t = time.perf_counter()
    index = load_index(Path(index_dir), mmap=mmap)
    load_s = time.perf_counter() - t
    loaded = status()
    points = []
    with threadpool_limits(1):
        first = []  # one pass over the queries first: pages the rows they re-score in (a warm server)
        for q in queries:
            t = time.perf_counter()
            index.search(q, K)
            first.append(time.perf_counter() - t)
        for ef in efs:
            index.set_params(efSearch=ef)
            times, found = [], []
            for q in queries:
                t = time.perf_counter()
                found.append(index.search(q, K)[1][0])
                times.append(time.perf_counter() - t)
            points.append({"efSearch": ef, "p50_ms": float(np.median(times)) * 1000,
                           "p99_ms": float(np.percentile(times, 99)) * 1000, "found": np.stack(found).tolist()})
    return {"mmap": mmap, "spec": index.spec, "load_s": load_s, "first_pass_p50_ms": float(np.median(first)) * 1000,
            "memory_start": start, "memory_loaded": loaded,
            "memory_end": status(), "points": points}


COLLECTION_CHUNK = 20_000  # items per write transaction while building the collection


def child_build_collection(dataset_dir: str, collection_dir: str, threads: int) -> dict[str, Any]:
    """A collection of the generated vectors (ids are their row numbers, random colour descriptors),
    its derived files written by ``persist`` as ``vestis index`` writes them."""
    import faiss
    from threadpoolctl import threadpool_limits

    from vestis.encoders.colour import COLOUR_DIM
    from vestis.store.collection import Collection, NewItem

    faiss.omp_set_num_threads(threads)
    base = np.load(Path(dataset_dir) / "base.npy", mmap_mode="r")
    tmp = Path(collection_dir + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    coll = Collection.create(tmp, encoder_name="generated", encoder_version="generated/v1", dim=base.shape[1],
                             colour_dim=COLOUR_DIM, index_spec="auto")
    with threadpool_limits(threads):
        for start in range(0, len(base), COLLECTION_CHUNK):
            vectors = np.asarray(base[start:start + COLLECTION_CHUNK], np.float32)
            colours = rng.random((len(vectors), COLOUR_DIM), dtype=np.float32)
            colours /= np.linalg.norm(colours, axis=1, keepdims=True)
            coll.upsert([NewItem(id=str(start + i), source="generated", hash=str(start + i), vector=v, colour=c,
                                 metadata={"label": "generated"})
                         for i, (v, c) in enumerate(zip(vectors, colours))])
        written_s = time.perf_counter() - t
        coll.persist()
    spec = coll.active_index_spec
    coll.close()
    build_s = time.perf_counter() - t
    tmp.rename(collection_dir)
    return {"spec": spec, "write_s": written_s, "build_s": build_s, "memory": status()}


def child_measure_collection(dataset_dir: str, collection_dir: str, efs: list[int]) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from vestis.search.results import Query
    from vestis.search.searcher import Searcher
    from vestis.store.collection import Collection

    queries = np.load(Path(dataset_dir) / "queries.npy")
    start = status()
    t = time.perf_counter()
    coll = Collection.open(collection_dir)
    searcher = Searcher(coll)
    coll.table()
    index = coll.index() if coll.uses_ann else None
    load_s = time.perf_counter() - t
    loaded = status()
    points = []
    with threadpool_limits(1):
        first = []
        for q in queries:  # a first pass pages in the rows the queries re-score (a warm server)
            t = time.perf_counter()
            searcher.search(Query(q, None), k=K)
            first.append(time.perf_counter() - t)
        for ef in efs if index is not None else [0]:
            if index is not None:
                index.set_params(efSearch=ef)
            times, stages, found = [], [], []
            for q in queries:
                t = time.perf_counter()
                response = searcher.search(Query(q, None), k=K)
                times.append(time.perf_counter() - t)
                stages.append(response.timings_ms)
                found.append([int(h.id) for h in response.hits])
            points.append({"efSearch": ef, "search_p50_ms": float(np.median([s["search"] for s in stages])),
                           "fetch_p50_ms": float(np.median([s["fetch_metadata"] for s in stages])),
                           "p50_ms": float(np.median(times)) * 1000, "p99_ms": float(np.percentile(times, 99)) * 1000,
                           "found": found})
    return {"mmap": True, "spec": coll.active_index_spec, "load_s": load_s,
            "first_pass_p50_ms": float(np.median(first)) * 1000, "memory_start": start, "memory_loaded": loaded,
            "memory_end": status(), "points": points, "items": len(coll)}


def run_child(*args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_results(out: Path, results: dict[str, Any], markdown: str) -> None:
    """``results.json`` (the figures and the table) and ``results.md`` in ``out``; the table printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({**results, "markdown": markdown}, indent=2) + "\n")
    (out / "results.md").write_text(markdown)
    print(markdown)


def gib(value: int) -> str:
    return f"{value / 2**30:.2f}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "build":
            result = child_build(rest[0], rest[1], int(rest[2]))
        elif kind == "build-collection":
            result = child_build_collection(rest[0], rest[1], int(rest[2]))
        elif kind == "measure-collection":
            result = child_measure_collection(rest[0], rest[1], [int(x) for x in rest[2].split(",")])
        else:
            result = child_measure(rest[0], rest[1], rest[2] == "mmap", [int(x) for x in rest[3].split(",")])
        print(json.dumps(result))
        return
    from vestis.bench.ann import knn_recall
    from vestis.bench.datasets import prepare_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--like", required=True,
                    help="collection folder (or .npy of embeddings) the generated vectors are fitted to, e.g. one "
                         "made by `vestis index ../shared/datasets/fashion-product-images-300.zip -c fpi300`")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--index-dir", type=Path, help="scratch folder where the built index is kept (reused)")
    ap.add_argument("--collection-dir", type=Path, help="measure a whole collection kept (and reused) here instead")
    ap.add_argument("--ef", default="32,48,64")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--layouts", default="mmap,memory", help="mmap, memory, or both (measured in this order)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/memory-1m")
    args = ap.parse_args()
    load = os.getloadavg()
    dataset = prepare_dataset("generated", n=args.n, like=args.like, queries=1000, k=K, threads=args.build_threads,
                              log=log)
    if args.collection_dir is not None:
        return measure_collection(args, dataset, load)
    if args.index_dir is None:
        ap.error("give --index-dir or --collection-dir")
    build_file = args.index_dir.with_name(args.index_dir.name + ".build.json")
    if not (args.index_dir / "index.json").exists():
        log(f"building the auto index over {args.n:,} vectors into {args.index_dir}")
        build = run_child("build", str(dataset.directory), str(args.index_dir), str(args.build_threads))
        build_file.write_text(json.dumps({**build, "load_average": load}) + "\n")
        log(f"built in {build['build_s']:.0f} s, peak {gib(build['memory']['VmHWM'])} GiB")
    build = json.loads(build_file.read_text()) if build_file.exists() else None
    base, queries, _, truth_scores = dataset.arrays()
    files = {p.name: p.stat().st_size for p in args.index_dir.iterdir()}
    layouts = []
    for layout in args.layouts.split(","):
        log(f"measuring layout {layout} in a fresh process")
        r = run_child("measure", str(dataset.directory), str(args.index_dir), layout, args.ef)
        for p in r["points"]:
            p["recall"] = knn_recall(np.array(p.pop("found")), queries, base, truth_scores, K)
        r["layout"] = layout
        layouts.append(r)
        log(f"{layout}: steady VmRSS {gib(r['memory_end']['VmRSS'])} GiB, peak {gib(r['memory_end']['VmHWM'])} GiB; "
            + ", ".join(f"ef {p['efSearch']}: recall {p['recall']:.3f} p50 {p['p50_ms']:.3f} ms" for p in r["points"]))

    lines = [f"Data: **{dataset.meta['label']}** ({dataset.meta['description']}); 1,000 held-out generated queries. "
             f"Index `{layouts[0]['spec']}`, files: "
             + ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in sorted(files.items()) if size > 1e6)
             + f". Queries one at a time, 1 thread. Load average at the start {load[0]:.1f}.", "",
             "| vectors | efSearch | recall@10 | p50 ms | p99 ms | load s | first pass p50 ms "
             "| steady VmRSS GiB (anon + file) | peak VmHWM GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in layouts:
        m = r["memory_end"]
        name = "memory-mapped from vectors.npy" if r["mmap"] else "read into memory (today)"
        for p in r["points"]:
            lines.append(f"| {name} | {p['efSearch']} | {p['recall']:.3f} | {p['p50_ms']:.3f} | {p['p99_ms']:.3f} | "
                         f"{r['load_s']:.1f} | {r['first_pass_p50_ms']:.3f} | "
                         f"{gib(m['VmRSS'])} ({gib(m['RssAnon'])} + {gib(m['RssFile'])}) | "
                         f"{gib(m['VmHWM'])} |")
    if build:
        lines += ["", f"Build (once, in its own process, {args.build_threads} threads, load average "
                      f"{build['load_average'][0]:.1f} at its start): {build['build_s']:.0f} s, peak "
                      f"{gib(build['memory']['VmHWM'])} GiB."]
    write_results(args.out, {"dataset": dataset.meta, "build": build, "files": files, "layouts": layouts,
                             "load_average": load}, "\n".join(lines) + "\n")


def measure_collection(args: argparse.Namespace, dataset: Any, load: tuple[float, float, float]) -> None:
    from vestis.bench.ann import knn_recall

    build_file = args.collection_dir.with_name(args.collection_dir.name + ".build.json")
    if not args.collection_dir.exists():
        log(f"building a collection of {args.n:,} generated items into {args.collection_dir}")
        build = run_child("build-collection", str(dataset.directory), str(args.collection_dir), str(args.build_threads))
        build_file.write_text(json.dumps({**build, "load_average": load}) + "\n")
        log(f"written in {build['write_s']:.0f} s, built in {build['build_s']:.0f} s, "
            f"peak {gib(build['memory']['VmHWM'])} GiB")
    build = json.loads(build_file.read_text())
    base, queries, _, truth_scores = dataset.arrays()
    log("measuring the collection in a fresh process")
    r = run_child("measure-collection", str(dataset.directory), str(args.collection_dir), args.ef)
    for point in r["points"]:
        point["recall"] = knn_recall(np.array(point.pop("found")), queries, base, truth_scores, K)
    m = r["memory_end"]
    files = {str(p.relative_to(args.collection_dir)): p.stat().st_size
             for p in args.collection_dir.rglob("*") if p.is_file() and p.stat().st_size > 1e6}
    markdown = "\n".join([
        f"Data: **{dataset.meta['label']}** ({dataset.meta['description']}), {r['items']:,} items with random "
        f"colour descriptors; 1,000 held-out generated queries through `Searcher.search` (k 10, no colour), one at "
        f"a time, 1 thread. Index `{r['spec']}`. Files: "
        + ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in sorted(files.items()))
        + f". Load average at the start {load[0]:.1f}.", "",
        "| collection | efSearch | recall@10 | p50 ms: search / metadata / whole call | p99 ms | open s "
        "| first pass p50 ms | steady VmRSS GiB (anon + file) | peak VmHWM GiB | RSS per item |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[f"| opened from its files | {p['efSearch'] or '-'} | {p['recall']:.3f} | {p['search_p50_ms']:.3f} / "
          f"{p['fetch_p50_ms']:.3f} / {p['p50_ms']:.3f} | {p['p99_ms']:.3f} | {r['load_s']:.1f} | "
          f"{r['first_pass_p50_ms']:.3f} | {gib(m['VmRSS'])} ({gib(m['RssAnon'])} + {gib(m['RssFile'])}) | "
          f"{gib(m['VmHWM'])} | {(m['VmRSS'] - r['memory_start']['VmRSS']) / r['items']:,.0f} B |"
          for p in r["points"]], "",
        f"Build (once, its own process, {args.build_threads} threads, load average {build['load_average'][0]:.1f}): "
        f"items written in {build['write_s']:.0f} s, everything in {build['build_s']:.0f} s, peak "
        f"{gib(build['memory']['VmHWM'])} GiB."]) + "\n"
    write_results(args.out, {"dataset": dataset.meta, "build": build, "files": files, "collection": r,
                             "load_average": load}, markdown)


if __name__ == "__main__":
    main()

"""ANN benchmark in the style of ann-benchmarks (``vestis bench ann``).

Every backend runs behind the same wrapper (``VectorIndex`` from ``make_index``) over a parameter
sweep (``configs/ann-sweep.yaml``). For each point: build time, memory per item (growth of the
process's anonymous resident memory over the build, so it includes the float32 copy every
backend keeps for exact re-scoring) and disk per item (``save()``), recall@10 against exact
search (tie-aware, as ann-benchmarks counts it: ``knn_recall``), single-query latency p50 / p99 (queries one at a time) and batch throughput (all queries
in one call). Output: ``results.json``, ``results.md`` and ``recall_qps.png`` (recall against
queries per second on a log scale, one line per backend along its Pareto frontier).

Datasets (``prepare_dataset``): the vectors of a collection directory or a ``.npy`` file, with
``queries`` vectors held out of the indexed set; or ``generated`` vectors from
``vestis.bench.synthetic`` (fitted to the vectors of ``like``, or a random mixture), labelled as
generated everywhere. Base, queries and exact ground truth are cached on disk per dataset.

Time and memory bounds: each build runs in a fresh ``python`` process (a clean memory baseline,
and a build that overruns ``build_budget_s`` is killed and reported as skipped); a sweep point stops
timing single queries after half its ``query_budget_s`` (recall is then over the queries answered)
and sizes its batch to fit the rest. Builds outside their ``min_n`` / ``max_n`` / ``min_dim`` / ``max_dim``
are skipped with the config's note. BLAS and OpenMP are limited to ``threads`` threads, with
passive OpenMP waiting (spinning idle threads slow FAISS down badly on a small shared machine).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from threadpoolctl import threadpool_limits

from vestis.bench.ann_report import best_points, write_report
from vestis.bench.datasets import TIE_EPSILON, Dataset, Log, prepare_dataset
from vestis.errors import VestisError
from vestis.eval.metrics import ann_recall_at_k
from vestis.index import make_index

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ann-sweep.yaml"
WARMUP = 10  # queries run before timing each point
DIED = "the benchmark process died"
# --- sweep configuration ---------------------------------------------------------------------


@dataclass
class Build:
    """One build of one backend and the search-time parameter points swept on it."""

    backend: str
    spec: str
    search: list[dict[str, Any]]
    exact: bool = False
    skip: str | None = None  # why this build is not run


def _with_params(spec: str, params: dict[str, Any]) -> str:
    if not params:
        return spec
    body = ",".join(f"{k}={v}" for k, v in params.items())
    if spec.startswith("faiss:"):
        return f"{spec}{',' if '?' in spec else '?'}{body}"
    return f"{spec}{',' if ':' in spec else ':'}{body}"


def _grid(params: dict[str, list[Any]] | None) -> list[dict[str, Any]]:
    params = params or {}
    values = [v if isinstance(v, list) else [v] for v in params.values()]
    return [dict(zip(params, combo, strict=True)) for combo in itertools.product(*values)]


def load_sweep(path: Path | None = None) -> dict[str, Any]:
    """The sweep configuration (``configs/ann-sweep.yaml`` by default)."""
    path = Path(path or DEFAULT_CONFIG)
    if not path.is_file():
        raise VestisError(f"no sweep configuration at {path} (give --config FILE)")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not isinstance(config.get("backends"), dict):
        raise VestisError(f"{path}: expected a mapping with a 'backends' section")
    return config


def plan(config: dict[str, Any], n: int, dim: int, backends: list[str] | None = None) -> list[Build]:
    """The builds to run for ``n`` x ``dim`` vectors, restricted to ``backends`` if given."""
    known = config["backends"]
    unknown = sorted(set(backends or []) - set(known))
    if unknown:
        raise VestisError(f"unknown backend(s) {', '.join(unknown)}; the sweep has: {', '.join(known)}")
    builds = []
    for name, family in known.items():
        if backends and name not in backends:
            continue
        for entry in family["builds"]:
            skip = None
            if not (entry.get("min_n", 0) <= n <= entry.get("max_n", n)
                    and entry.get("min_dim", 0) <= dim <= entry.get("max_dim", dim)):
                skip = entry.get("note", "outside this build's size limits")
            for build_params in _grid(entry.get("build")):
                builds.append(Build(name, _with_params(entry["spec"], build_params), _grid(entry.get("search")),
                                    bool(family.get("exact")), skip))
    return builds


# --- measurement (in a child process per build) -------------------------------------------------


def _rss_anon() -> int:
    """Anonymous resident memory of this process in bytes (Linux), 0 where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(seconds, q) * 1000)


def knn_recall(found: np.ndarray, queries: np.ndarray, base: np.ndarray, truth_scores: np.ndarray, k: int) -> float:
    """Recall@k as ann-benchmarks counts it: the share of the k results whose true cosine (recomputed
    here) reaches the k-th true neighbour's, so any of several tied neighbours counts (catalogues hold
    duplicate images, whose order among themselves is arbitrary)."""
    found = found[:, :k]
    valid = found >= 0
    scores = np.einsum("qd,qkd->qk", queries, base[np.where(valid, found, 0)])
    hits = valid & (scores >= truth_scores[:, k - 1:k] - TIE_EPSILON)
    return float(hits.sum(axis=1).mean() / k)


def measure_point(index: Any, queries: np.ndarray, base: np.ndarray, truth: np.ndarray, truth_scores: np.ndarray,
                  k: int, budget_s: float) -> dict[str, Any]:
    """Recall@k, single-query latency and batch throughput of ``index`` as currently configured
    (``recall``: tie-aware, see ``knn_recall``; ``recall_ids``: exact ids, ``ann_recall_at_k``)."""
    for q in queries[:WARMUP]:
        index.search(q, k)
    start = time.perf_counter()
    latencies, found = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(index.search(q, k)[1][0])
        latencies.append(time.perf_counter() - t)
        if t - start > budget_s / 2:
            break
    answered = len(latencies)
    mean = float(np.mean(latencies))
    batch = len(queries) if mean * len(queries) < budget_s / 2 else max(1, int(budget_s / 2 / mean))
    t = time.perf_counter()
    index.search(queries[:batch], k)
    batch_s = time.perf_counter() - t
    found = np.stack(found)
    result = {"recall": knn_recall(found, queries[:answered], base, truth_scores[:answered], k),
              "recall_ids": ann_recall_at_k(found, truth[:answered], k),
              "p50_ms": _percentile_ms(latencies, 50), "p99_ms": _percentile_ms(latencies, 99),
              "mean_ms": mean * 1000, "single_queries": answered, "batch_queries": batch,
              "batch_qps": batch / batch_s}
    if answered < len(queries):
        result["note"] = (f"query budget: timed {answered} of {len(queries)} queries (recall over those), "
                          f"batch of {batch}")
    return result


def _threads(n: int) -> threadpool_limits:
    """Limit BLAS (threadpoolctl) and FAISS's OpenMP to ``n`` threads, for the ``with`` block."""
    import faiss

    faiss.omp_set_num_threads(n)
    return threadpool_limits(n)


def _measure_build(send: Callable[[str, dict[str, Any]], None], job: dict[str, Any]) -> None:
    """Build one index and measure its sweep points, reporting ("built" | "point" | "disk", dict)."""
    build, k, budget_s = Build(**job["build"]), job["k"], job["budget_s"]
    base, queries, truth, truth_scores = Dataset(Path(job["data"]), {}).arrays()
    ids = np.arange(len(base), dtype=np.int64)
    before = _rss_anon()
    t = time.perf_counter()
    with _threads(job["build_threads"]):
        index = make_index(build.spec, base.shape[1])
        index.add(ids, base)
        if hasattr(index, "build"):
            index.build()
    built = {"build_s": time.perf_counter() - t, "mem_bytes_per_item": (_rss_anon() - before) / len(base)}
    if index.info().get("built") == 0:
        built["note"] = "structure not built (fewer vectors than train_min): these are exact searches"
    send("built", built)
    for params in build.search or [{}]:
        if params:
            index.set_params(**params)
        with _threads(job["threads"]):
            point = measure_point(index, queries, base, truth, truth_scores, k, budget_s)
        send("point", {"spec": index.spec, "params": params, **point})
    directory = Path(tempfile.mkdtemp(dir=job["scratch"]))
    try:
        index.save(directory)
        disk = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    send("disk", {"disk_bytes_per_item": disk / len(base)})


def _child() -> None:
    """Entry point of a build process: ``python -c ... JOB_JSON RESULT_FD`` (see ``_run_build``)."""
    job, out = json.loads(sys.argv[1]), os.fdopen(int(sys.argv[2]), "w", buffering=1)

    def send(kind: str, message: dict[str, Any]) -> None:
        out.write(json.dumps([kind, message], default=float) + "\n")

    try:
        _measure_build(send, job)
    except Exception as error:  # noqa: BLE001 - any failure of one backend becomes its note; the sweep goes on
        send("error", {"message": f"{type(error).__name__}: {error}"})


def child_env() -> dict[str, str]:
    """Environment of a child ``python`` that imports this vestis from any directory, with passive
    OpenMP waiting (read when OpenMP loads)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def _run_build(dataset: Dataset, build: Build, *, k: int, threads: int, build_threads: int, build_budget_s: float,
               query_budget_s: float, scratch: Path, log: Log) -> list[dict[str, Any]]:
    """The result rows of one build (one per search point), measured in a fresh process."""
    row = {"backend": build.backend, "spec": build.spec, "exact": build.exact}
    if build.skip:
        log(f"  {build.spec}: skipped ({build.skip})")
        return [{**row, "skipped": True, "note": build.skip}]
    job = {"data": str(dataset.directory), "build": asdict(build), "k": k, "threads": threads,
           "build_threads": build_threads, "budget_s": query_budget_s, "scratch": str(scratch)}
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [sys.executable, "-c", "from vestis.bench.ann import _child; _child()", json.dumps(job), str(write_fd)],
            pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
            env=child_env())
        os.close(write_fd)
        try:
            with os.fdopen(read_fd) as results:
                rows, built, note = _collect(process, results, row, len(build.search or [{}]), build_budget_s,
                                             query_budget_s, log)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        if note and note.startswith(DIED):
            errors.seek(0)
            tail = errors.read().decode(errors="replace").strip().splitlines()[-1:]
            note += f" (exit code {process.returncode}{': ' + tail[0] if tail else ''}; -9 is usually out of memory)"
    if note:
        log(f"  {build.spec}: {note}")
        if not rows:
            return [{**row, **(built or {}), "skipped": True, "note": note}]
        rows[-1]["note"] = "; ".join(filter(None, [rows[-1].get("note"), note]))
    return rows


def _collect(process: subprocess.Popen, results: Any, row: dict[str, Any], points: int, build_budget_s: float,
             query_budget_s: float, log: Log) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
    """Read a build process's reports until it is done, fails or overruns its budget."""
    rows: list[dict[str, Any]] = []
    built: dict[str, Any] | None = None
    while True:
        phase = "build" if built is None else "save" if len(rows) == points else "search"
        timeout = query_budget_s * 2 + 60 if phase == "search" else build_budget_s
        if not select.select([results], [], [], timeout)[0]:
            process.kill()
            return rows, built, f"{phase} did not finish within {timeout:.0f} s: stopped"
        line = results.readline()
        if not line:
            return rows, built, f"{DIED} during {phase}"
        kind, message = json.loads(line)
        if kind == "error":
            return rows, built, f"failed: {message['message']}"
        if kind == "built":
            built = message
            log(f"  built in {message['build_s']:.1f} s, {message['mem_bytes_per_item']:.0f} B/item in memory"
                + (f"; {message['note']}" if "note" in message else ""))
        elif kind == "point":
            notes = [built.get("note"), message.pop("note", None)]
            rows.append({**row, **built, **message, "note": "; ".join(filter(None, notes))})
            log(f"    {message['params'] or '-'}: recall {message['recall']:.3f}, p50 {message['p50_ms']:.3f} ms, "
                f"batch {message['batch_qps']:.0f} q/s")
        elif kind == "disk":
            for r in rows:
                r.update(message)
            return rows, built, None


# --- the whole benchmark -----------------------------------------------------------------------


@dataclass
class BenchSettings:
    """How to run the sweep; budgets left as None come from the sweep configuration."""

    threads: int = 1  # searches
    build_threads: int | None = None  # builds (default: ``threads``)
    backends: list[str] | None = None
    build_budget_s: float | None = None
    query_budget_s: float | None = None
    k: int = 10


def run_sweep(dataset: Dataset, builds: list[Build], settings: BenchSettings, scratch: Path,
              log: Log = print) -> list[dict[str, Any]]:
    """Every build of the plan, one process each, in order."""
    rows = []
    for build in builds:
        log(f"{build.backend}: {build.spec}")
        rows += _run_build(dataset, build, k=settings.k, threads=settings.threads,
                           build_threads=settings.build_threads or settings.threads,
                           build_budget_s=settings.build_budget_s, query_budget_s=settings.query_budget_s,
                           scratch=scratch, log=log)
    return rows



def machine_summary() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "load_avg_1m": load[0],
            "summary": f"{os.cpu_count()} CPUs ({platform.machine()}), load average {load[0]:.1f} at start"}


def run_ann_bench(source: str, out: Path, *, n: int | None = None, dim: int | None = None, queries: int = 1000,
                  like: str | None = None, config: Path | None = None, settings: BenchSettings | None = None,
                  seed: int = 0, cache_dir: Path | None = None, command: str = "", log: Log = print) -> dict[str, Any]:
    """Prepare the dataset, run the sweep, write the report into ``out``; returns the result."""
    sweep = load_sweep(config)
    settings = settings or BenchSettings()
    settings.k = int(sweep.get("k", settings.k))
    settings.build_budget_s = float(settings.build_budget_s or sweep.get("build_budget_s", 900))
    settings.query_budget_s = float(settings.query_budget_s or sweep.get("query_budget_s", 20))
    dataset = prepare_dataset(source, n=n, dim=dim, queries=queries, like=like, k=settings.k, seed=seed,
                              cache_dir=cache_dir, threads=settings.build_threads or settings.threads, log=log)
    builds = plan(sweep, dataset.meta["n"], dataset.meta["dim"], settings.backends)
    machine = machine_summary()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        rows = run_sweep(dataset, builds, settings, Path(scratch), log)
    result = {"dataset": dataset.meta, "command": command, "machine": machine,
              "settings": {"k": settings.k, "threads": settings.threads,
                           "build_threads": settings.build_threads or settings.threads,
                           "build_budget_s": settings.build_budget_s,
                           "query_budget_s": settings.query_budget_s, "load_avg_1m_end": os.getloadavg()[0]},
              "points": rows, "best": best_points(rows)}
    result["files"] = {k: str(v) for k, v in write_report(result, out).items()}
    return result

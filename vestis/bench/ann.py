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

import hashlib
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

from vestis.errors import VestisError
from vestis.eval.metrics import ann_recall_at_k
from vestis.index import make_index
from vestis.index.topk import exact_search
from vestis.bench.synthetic import MixtureModel, neighbour_stats

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ann-sweep.yaml"
WARMUP = 10  # queries run before timing each point
TARGET_RECALL = 0.95
DIED = "the benchmark process died"
DATASET_VERSION = 2  # bump when the prepared files change
TIE_EPSILON = 1e-5  # cosine slack when matching the k-th neighbour's score (float32 rounding)
Log = Callable[[str], None]


def default_cache_dir() -> Path:
    """Where prepared datasets live: ``$VESTIS_CACHE_DIR/bench``, else ``~/.cache/vestis/bench``."""
    root = os.environ.get("VESTIS_CACHE_DIR")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vestis"
    return base.expanduser() / "bench"


# --- datasets --------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Prepared vectors on disk: ``base.npy`` (indexed), ``queries.npy`` (held out), ``truth.npy`` and
    ``truth_scores.npy`` (exact top-k rows of base and their cosines per query) and ``dataset.json``
    (``meta``: label, provenance)."""

    directory: Path
    meta: dict[str, Any]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(base, queries, truth, truth_scores); base is memory-mapped."""
        d = self.directory
        return (np.load(d / "base.npy", mmap_mode="r"), np.load(d / "queries.npy"), np.load(d / "truth.npy"),
                np.load(d / "truth_scores.npy"))


def load_vectors(source: str | Path) -> tuple[np.ndarray, str]:
    """Vectors of a collection directory or a ``.npy`` file (N x dim float32), and a label."""
    path = Path(source)
    if path.suffix == ".npy" and path.is_file():
        vectors = np.load(path, mmap_mode="r")
        if vectors.ndim != 2:
            raise VestisError(f"{path} holds an array of shape {vectors.shape}; expected N x dim vectors")
        return vectors, f"vectors of {path.name}"
    from vestis.store.factory import collection_exists, open_collection

    if not collection_exists(source):
        raise VestisError(f"{source} is neither a collection directory nor a .npy file (or say 'generated')")
    with open_collection(source) as collection:
        vectors = collection.table().view[1].copy()
        return vectors, f"{collection.encoder_name} embeddings of {path.name}"


def _identity(source: str | Path | None) -> str:
    """What a cached dataset depends on: a file's size and modification time, a collection's
    generation (bumped by every write)."""
    if source is None:
        return ""
    path = Path(source).resolve()
    if path.is_file():
        return f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    from vestis.store.factory import collection_exists, open_collection

    if not collection_exists(source):
        return str(path)
    with open_collection(source) as collection:
        return f"{path}:generation {collection.generation}"


def prepare_dataset(source: str, *, n: int | None = None, dim: int | None = None, queries: int = 1000,
                    like: str | None = None, k: int = 10, seed: int = 0, cache_dir: Path | None = None,
                    threads: int = 1, log: Log = print) -> Dataset:
    """Base vectors, held-out queries and exact ground truth for ``source`` (see the module doc)."""
    generated = source == "generated"
    if generated and n is None:
        raise VestisError("generated vectors need a size: give --n (e.g. --n 1000000)")
    if not generated and like is not None:
        raise VestisError("--like only applies to --vectors generated")
    if dim is not None and not (generated and like is None):
        raise VestisError("--dim only applies to generated vectors without --like (real vectors keep their "
                          "dimension; a PCA-reduced scan is the pca256 backend)")
    key = json.dumps([DATASET_VERSION, source, _identity(None if generated else source), _identity(like), n, dim,
                      queries, k, seed])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    directory = (cache_dir or default_cache_dir()) / f"{Path(source).name or source}-{n or 'all'}-{digest}"
    if (directory / "dataset.json").exists():
        log(f"using prepared dataset {directory}")
        return Dataset(directory, json.loads((directory / "dataset.json").read_text()))
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with threadpool_limits(threads):
        meta = (_generate if generated else _hold_out)(tmp, source, n=n, dim=dim, queries=queries, like=like,
                                                       seed=seed, log=log)
        base, qs = np.load(tmp / "base.npy", mmap_mode="r"), np.load(tmp / "queries.npy")
        log(f"exact ground truth: {len(qs)} queries x {len(base):,} vectors")
        scores, rows = exact_search(qs, base, k)
        np.save(tmp / "truth.npy", rows)
        np.save(tmp / "truth_scores.npy", scores)
    meta.update(n=len(base), dim=base.shape[1], queries=len(qs), k=k, seed=seed)
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return Dataset(directory, meta)


def _hold_out(directory: Path, source: str, *, n: int | None, queries: int, seed: int, log: Log,
              **_: Any) -> dict[str, Any]:
    vectors, label = load_vectors(source)
    if len(vectors) <= queries:
        raise VestisError(f"{source} holds {len(vectors)} vectors: too few to hold out {queries} queries")
    order = np.random.default_rng(seed).permutation(len(vectors))
    rest = np.sort(order[queries:][:n])
    np.save(directory / "queries.npy", np.ascontiguousarray(vectors[np.sort(order[:queries])], np.float32))
    np.save(directory / "base.npy", np.ascontiguousarray(vectors[rest], np.float32))
    log(f"{label}: {len(rest):,} indexed, {queries} held-out queries")
    return {"label": f"{label} (real)", "generated": False, "source": str(source),
            "description": f"{len(rest):,} real vectors; {queries} other vectors of the same set as queries"}


def _generate(directory: Path, source: str, *, n: int, dim: int | None, queries: int, like: str | None,
              seed: int, log: Log) -> dict[str, Any]:
    match = None
    if like is not None:
        real, label = load_vectors(like)
        real = np.ascontiguousarray(real, np.float32)
        log(f"fitting the generator to {len(real):,} {label}")
        model = MixtureModel.fit(real, seed=seed, label=label)
        m = min(len(real) - queries, 100_000)  # compare both sets at the real size, queries held out alike
        order = np.random.default_rng(seed).permutation(len(real))
        fake = model.sample(m + queries, seed=seed + 2)
        match = {"n": m, "real": neighbour_stats(real[np.sort(order[queries:][:m])], real[order[:queries]]),
                 "generated": neighbour_stats(fake[:m], fake[m:])}
    else:
        model = MixtureModel.random(dim or 128, seed=seed)
    model.save(directory / "model.npz")
    log(f"generating {n:,} + {queries} vectors: {model.description}")
    base = np.lib.format.open_memmap(directory / "base.npy", "w+", np.float32, (n, model.dim))
    model.sample(n, seed=seed, out=base)
    base.flush()
    del base
    np.save(directory / "queries.npy", model.sample(queries, seed=seed + 1))
    return {"label": f"GENERATED {n:,} x {model.dim} ({'like ' + Path(like).name if like else 'random mixture'})",
            "generated": True, "source": "generated", "like": like, "description": model.description,
            "distribution_check": match}


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


def best_points(rows: list[dict[str, Any]], target: float = TARGET_RECALL) -> dict[str, dict[str, Any]]:
    """Per backend, the measured point with the lowest p50 among those reaching ``target`` recall."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("skipped") or r["recall"] < target:
            continue
        if r["backend"] not in best or r["p50_ms"] < best[r["backend"]]["p50_ms"]:
            best[r["backend"]] = r
    return best


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (recall, qps) points not beaten on both, sorted by recall."""
    front = []
    for recall, qps in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or qps > front[-1][1]:
            front.append((recall, qps))
    return sorted(front)


def write_report(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.json, results.md and recall_qps.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "recall_qps.png"}
    paths["json"].write_text(json.dumps(result, indent=2, default=float) + "\n")
    paths["markdown"].write_text(markdown(result))
    plot(result, paths["plot"])
    return paths


def _fmt(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _row_cells(r: dict[str, Any]) -> list[str]:
    params = ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())
    return [r["backend"], f"`{r['spec']}`", params, _fmt(r.get("build_s"), 1), _fmt(r.get("mem_bytes_per_item"), 0),
            _fmt(r.get("disk_bytes_per_item"), 0), _fmt(r.get("recall"), 3), _fmt(r.get("p50_ms"), 3),
            _fmt(r.get("p99_ms"), 3), _fmt(r.get("batch_qps"), 0), r.get("note", "")]


_HEAD = ["backend", "spec", "search params", "build s", "memory B/item", "disk B/item", "recall@10", "p50 ms",
         "p99 ms", "batch q/s", "note"]


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    return "\n".join(lines + ["| " + " | ".join(_row_cells(r)) + " |" for r in rows])


def markdown(result: dict[str, Any]) -> str:
    """The results as markdown: dataset, best points at the target recall, every point."""
    d, s = result["dataset"], result["settings"]
    lines = [f"# ANN benchmark: {d['label']}", "",
             f"{d['n']:,} vectors x {d['dim']}, {d['queries']} held-out queries, k={d['k']}. {d['description']}.", ""]
    check = d.get("distribution_check")
    if check:
        real, fake = check["real"], check["generated"]
        lines += [(f"Generated vs real at {check['n']:,} vectors (median cosine of 1st / 10th neighbour): "
                   f"real {real['nn1_cos_median']:.3f} / {real['nn10_cos_median']:.3f}, "
                   f"generated {fake['nn1_cos_median']:.3f} / {fake['nn10_cos_median']:.3f}."), ""]
    lines += [f"Command: `{result['command']}`  ",
              (f"Machine: {result['machine']['summary']}; {s['threads']} search / {s['build_threads']} build "
               f"thread(s); budgets: build "
               f"{s['build_budget_s']:.0f} s, queries {s['query_budget_s']:.0f} s per point."), "",
              f"## Fastest point per backend at recall@10 >= {TARGET_RECALL}", "",
              _table(sorted(result["best"].values(), key=lambda r: r["p50_ms"])), "", "## All points", "",
              _table(result["points"]), ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Recall@10 against queries per second (log scale): single queries and batch, one line per backend
    along its Pareto frontier, dominated points faint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["points"] if not r.get("skipped")]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharex=True)
    colours = plt.get_cmap("tab20")
    for i, name in enumerate(dict.fromkeys(r["backend"] for r in rows)):
        mine = [r for r in rows if r["backend"] == name]
        colour, marker = colours((2 * i) % 20 + (2 * i) // 20), "osD^vP*X"[i % 8]
        for ax, qps in zip(axes, (lambda r: 1000 / r["p50_ms"], lambda r: r["batch_qps"]), strict=True):
            pts = [(r["recall"], qps(r)) for r in mine]
            ax.scatter(*zip(*pts, strict=True), color=colour, marker=marker, alpha=0.25, s=14)
            ax.plot(*zip(*pareto(pts), strict=True), marker=marker, ms=5, color=colour, label=name)
    for ax, title in zip(axes, ("single query (1 / median latency)", "batch of all queries"), strict=True):
        ax.set_yscale("log")
        ax.axvline(TARGET_RECALL, color="grey", ls=":", lw=1)
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries per second")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    if rows:
        axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(result["dataset"]["label"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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

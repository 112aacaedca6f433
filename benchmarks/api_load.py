"""HTTP API figures: start-up to first answer, then upload latency and throughput under load, for
the unbatched server and servers that batch concurrent uploads (``vestis serve --batch N``).

    .venv/bin/python benchmarks/api_load.py --collection DIR [--source CATALOGUE] [--duration 30]
                                            [--clients 1 8 32] [--batch 1 8] [--workers N] [--breakdown 200]
                                            [--json out.json]

Starts the server (``vestis.api.serve``) in a subprocess on 127.0.0.1 at a free port; all traffic
goes to 127.0.0.1 only. When DIR holds no collection it is built first from ``--source`` (default:
Fashion Product Images small, 44k items). Each client uploads real 225x300 catalogue JPEGs
(``--queries``, default the 225x300 subset) to ``POST /search`` in a loop, one request at a time, for
``--duration`` seconds per client count; every phase is bounded in time and the server is stopped
at the end. With several ``--batch`` values every server is started first, then each client count
runs against each server in turn, so the servers are compared side by side in the same minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx

from vestis.store.collection import Collection

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
STARTUP_LIMIT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_queries(path: Path, count: int) -> list[bytes]:
    """The first ``count`` JPEGs of a zip archive or folder."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.jpg"))[:count]
        return [p.read_bytes() for p in files]
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith(".jpg"))[:count]
        return [z.read(n) for n in names]


def search(client: httpx.Client, base: str, image: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    r = client.post(f"{base}/search", files={"file": ("q.jpg", image, "image/jpeg")}, data={"k": "10"})
    return r.status_code, time.perf_counter() - started


def start_server(collection: Path, port: int, workers: int | None, query: bytes, batch: int = 1,
                 batch_wait_ms: float = 4.0) -> tuple[subprocess.Popen, float]:
    """Start the server and wait for its first answer to a real query; returns (process, seconds)."""
    code = (f"from vestis.api import serve; serve({str(collection)!r}, host='127.0.0.1', port={port}, "
            f"workers={workers!r}, log_level='warning', batch={batch}, batch_wait_ms={batch_wait_ms})")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=10) as client:
        while time.perf_counter() - started < STARTUP_LIMIT_S:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with code {proc.returncode}")
            try:
                if search(client, base, query)[0] == 200:
                    return proc, time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"no answer from the server within {STARTUP_LIMIT_S} s")


def load(base: str, queries: list[bytes], clients: int, duration: float) -> dict:
    """``clients`` threads posting uploads back to back for ``duration`` seconds."""
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def client_loop(offset: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = offset
            while time.perf_counter() < deadline:
                try:
                    status, seconds = search(client, base, queries[i % len(queries)])
                except httpx.HTTPError:
                    status, seconds = -1, 0.0
                with lock:
                    (latencies.append(seconds) if status == 200 else errors.append(status))
                i += clients

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    return {
        "clients": clients,
        "requests": len(ms),
        "errors": len(errors),
        "throughput_qps": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1) if ms else None,
    }


def breakdown(base: str, queries: list[bytes], count: int) -> dict:
    """One client, ``count`` uploads in turn: where each request's time goes. The server reports its
    own phases (``timings_ms``: the wait for a worker, decode, embed, search, metadata, and its total
    from the route's start); what the client measures beyond that total is HTTP: the connection,
    multipart parsing, the middleware, JSON out and in."""
    phases: dict[str, list[float]] = {}
    with httpx.Client(timeout=30) as client:
        for i in range(count):
            started = time.perf_counter()
            r = client.post(f"{base}/search", files={"file": ("q.jpg", queries[i % len(queries)], "image/jpeg")},
                            data={"k": "10"})
            seconds = time.perf_counter() - started
            if r.status_code != 200:
                continue
            timings = r.json()["timings_ms"]
            engine = sum(v for key, v in timings.items() if key not in ("queue", "total"))
            for key, value in {**timings, "client": seconds * 1000, "http": seconds * 1000 - timings["total"],
                               "route": timings["total"] - engine}.items():
                phases.setdefault(key, []).append(value)
    return {key: round(statistics.median(v), 2) for key, v in phases.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, required=True)
    ap.add_argument("--source", type=Path, default=DATASETS / "fashion-product-images-small.zip")
    ap.add_argument("--queries", type=Path, default=DATASETS / "fashion-product-images-300.zip")
    ap.add_argument("--query-count", type=int, default=300)
    ap.add_argument("--duration", type=float, default=30.0, help="Seconds of load per client count.")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--batch", type=int, nargs="+", default=[1], help="Servers to compare: 1 is unbatched.")
    ap.add_argument("--batch-wait-ms", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=None, help="Inference workers (default: the server's).")
    ap.add_argument("--breakdown", type=int, default=0,
                    help="Uploads timed one at a time against the first server, phase by phase (0: none).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the figures as JSON.")
    args = ap.parse_args()

    if not Collection.exists(args.collection):
        print(f"building {args.collection} from {args.source} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "vestis", "index", str(args.source), "--collection",
                        str(args.collection)], check=True, cwd=ROOT)
    with Collection.open(args.collection) as coll:
        items = len(coll)
    queries = load_queries(args.queries, args.query_count)
    load_average = os.getloadavg()
    servers: dict[int, tuple[subprocess.Popen, str]] = {}
    startups: dict[int, float] = {}
    runs = []
    try:
        for batch in args.batch:
            port = free_port()
            proc, startups[batch] = start_server(args.collection, port, args.workers, queries[0], batch,
                                                 args.batch_wait_ms)
            servers[batch] = proc, f"http://127.0.0.1:{port}"
            load(servers[batch][1], queries, 1, min(3.0, args.duration))  # warm-up, not reported
        phases = breakdown(next(iter(servers.values()))[1], queries, args.breakdown) if args.breakdown else {}
        for clients in args.clients:
            for batch, (_, base) in servers.items():
                runs.append({"batch": batch, **load(base, queries, clients, args.duration)})
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    print(f"\ncollection: {items:,} items; queries: {len(queries)} JPEGs from {args.queries.name}; "
          f"{os.cpu_count()} cores; {args.duration:.0f} s per run; load average at the start {load_average[0]:.1f}")
    print("start-up to first answer: " + ", ".join(f"{_server(b)} {s:.2f} s" for b, s in startups.items()) + "\n")
    unbatched = {r["clients"]: r for r in runs if r["batch"] == 1}
    print("| server | clients | requests | queries/s | p50 ms | p99 ms | errors | queries/s vs unbatched |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        ref = unbatched.get(r["clients"])
        ratio = f"{r['throughput_qps'] / ref['throughput_qps']:.2f}x" if ref and ref["throughput_qps"] else "–"
        print(f"| {_server(r['batch'])} | {r['clients']} | {r['requests']} | {r['throughput_qps']} | {r['p50_ms']} "
              f"| {r['p99_ms']} | {r['errors']} | {ratio} |")
    if phases:
        print(f"\none client, {args.breakdown} uploads, medians in ms (route: the server's total less its engine "
              "phases; http: the client's time less the server's total):")
        print("| " + " | ".join(phases) + " |\n|" + "---:|" * len(phases))
        print("| " + " | ".join(str(v) for v in phases.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps({"items": items, "startup_s": startups, "runs": runs, "breakdown": phases,
                                         "load_average": load_average, "batch_wait_ms": args.batch_wait_ms},
                                        indent=2))


def _server(batch: int) -> str:
    return "unbatched" if batch <= 1 else f"batch <= {batch}"


if __name__ == "__main__":
    main()

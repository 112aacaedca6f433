"""HTTP API figures: upload latency and throughput under load, side by side with ``vestis index``'s
images/s on the same machine, with the CPU time the server and the load generator spent per request.

    .venv/bin/python benchmarks/api_load.py --collection DIR --out DIR [--duration 30] [--clients 1 8]
                                            [--client raw|httpx] [--batch 1 8] [--workers N]
                                            [--breakdown 200] [--index-rounds 2] [--no-bench-query]

Starts the server (``vestis.api.serve``) in a subprocess on 127.0.0.1 at a free port; all traffic
goes to 127.0.0.1 only. When DIR holds no collection it is built first from ``--source`` (default:
Fashion Product Images small, 44k items). Clients upload real 225x300 catalogue JPEGs
(``--queries``, default the 225x300 subset) to ``POST /search`` back to back, one request at a time
each, for ``--duration`` seconds per client count; every phase is bounded in time and the server is
stopped at the end.

The load generator shares the cores with the server, so it is built to cost little: ``--client raw``
(default) is one process driving every client as an asyncio keep-alive connection that sends
pre-built multipart requests and reads the answers by their Content-Length. ``--client httpx`` is
the earlier generator (one httpx client per thread, building each upload), kept for comparison with
the earlier figures. Both report their own CPU time per request beside the server's (from
``/proc/PID/stat``), so what the server itself costs is visible whichever client ran.

``vestis index`` of the ``--queries`` archive into a fresh temporary collection, with the served
collection's encoder, runs ``--index-rounds`` times: half before the client runs, half after, and
the 8-client ratio is taken against their mean. ``vestis bench query`` on the served collection
gives the one-client reference. With several ``--batch`` values every server is started first, then
each client count runs against each server in turn. The figures go to ``--out`` as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx

from vestis.encoders.cpu import describe_cpu
from vestis.store.collection import Collection

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
STARTUP_LIMIT_S = 300
REQUEST_TIMEOUT_S = 30
BOUNDARY = "vestisloadboundary7d1f"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def upload_request(port: int, image: bytes) -> bytes:
    """The whole HTTP/1.1 request of one upload (``file`` and ``k=10``), as httpx would send it."""
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n10\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode()
    return head + body


def search(client: httpx.Client, base: str, image: bytes) -> httpx.Response:
    return client.post(f"{base}/search", files={"file": ("q.jpg", image, "image/jpeg")}, data={"k": "10"})


def start_server(collection: Path, port: int, workers: int | None, query: bytes, batch: int) -> tuple[
        subprocess.Popen, float]:
    """Start the server and wait for its first answer to a real query; returns (process, seconds)."""
    code = (f"from vestis.api import serve; serve({str(collection)!r}, host='127.0.0.1', port={port}, "
            f"workers={workers!r}, log_level='warning', batch={batch})")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=10) as client:
        while time.perf_counter() - started < STARTUP_LIMIT_S:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with code {proc.returncode}")
            try:
                if search(client, base, query).status_code == 200:
                    return proc, time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"no answer from the server within {STARTUP_LIMIT_S} s")


def cpu_s(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds so far of a process (all its threads), or of one of its threads."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def encoder_batches(port: int) -> tuple[float, float]:
    """The server's encoder runs of batched uploads and the uploads they embedded (0, 0 unbatched)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    values = dict(line.split() for line in text.splitlines() if line.startswith("vestis_encoder_batch"))
    return float(values.get("vestis_encoder_batches_total", 0)), float(values.get("vestis_encoder_batched_images_total", 0))


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _raw_clients(port: int, requests: list[bytes], clients: int, deadline: float,
                       latencies: list[float], errors: list[int]) -> None:
    async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line[15:]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")),
                      None)
        if length is None:
            raise ValueError("an answer without Content-Length")
        await reader.readexactly(length)
        return int(head[9:12])

    async def client_loop(offset: int) -> None:
        connection = None
        i = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                connection = connection or await asyncio.open_connection("127.0.0.1", port)
                status = await asyncio.wait_for(ask(*connection, requests[i % len(requests)]), REQUEST_TIMEOUT_S)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                status = -1  # counted as an error; the next request opens a new connection
                if connection is not None:
                    connection[1].close()
                connection = None
            (latencies.append(time.perf_counter() - started) if status == 200 else errors.append(status))
            i += clients
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(client_loop(c) for c in range(clients)))


def _httpx_clients(base: str, queries: list[bytes], clients: int, deadline: float,
                   latencies: list[float], errors: list[int]) -> None:
    lock = threading.Lock()

    def client_loop(offset: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    status = search(client, base, queries[i % len(queries)]).status_code
                except httpx.HTTPError:
                    status = -1
                with lock:
                    (latencies.append(time.perf_counter() - started) if status == 200 else errors.append(status))
                i += clients

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def load(server_pid: int, port: int, queries: list[bytes], requests: list[bytes], clients: int, duration: float,
         kind: str) -> dict:
    """``clients`` clients posting uploads back to back for ``duration`` seconds, with the CPU time
    the server and this process spent meanwhile."""
    latencies: list[float] = []
    errors: list[int] = []
    # The server's main thread runs the event loop (HTTP, multipart, routing, JSON); the rest is the
    # inference pool (decode, embed, search, metadata) and any encoder threads.
    batches, batched = encoder_batches(port)
    server_cpu, loop_cpu, client_cpu = cpu_s(server_pid), cpu_s(server_pid, server_pid), own_cpu_s()
    load_average = os.getloadavg()[0]
    started = time.perf_counter()
    deadline = started + duration
    if kind == "raw":
        asyncio.run(_raw_clients(port, requests, clients, deadline, latencies, errors))
    else:
        _httpx_clients(f"http://127.0.0.1:{port}", queries, clients, deadline, latencies, errors)
    elapsed = time.perf_counter() - started
    server_cpu, loop_cpu = cpu_s(server_pid) - server_cpu, cpu_s(server_pid, server_pid) - loop_cpu
    client_cpu = own_cpu_s() - client_cpu
    batches, batched = (after - before for after, before in zip(encoder_batches(port), (batches, batched)))
    ms = sorted(x * 1000 for x in latencies)
    done = max(1, len(ms))
    return {
        "clients": clients,
        "client": kind,
        "requests": len(ms),
        "errors": len(errors),
        "throughput_qps": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1) if ms else None,
        "server_cpu_ms_per_request": round(server_cpu * 1000 / done, 2),
        "event_loop_cpu_ms_per_request": round(loop_cpu * 1000 / done, 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / done, 2),
        "cores_busy": round((server_cpu + client_cpu) / elapsed, 2),
        "mean_batch": round(batched / batches, 2) if batches else None,
        "load_average": round(load_average, 2),
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
            r = search(client, base, queries[i % len(queries)])
            seconds = time.perf_counter() - started
            if r.status_code != 200:
                continue
            timings = r.json()["timings_ms"]
            engine = sum(v for key, v in timings.items() if key not in ("queue", "total"))
            for key, value in {**timings, "client": seconds * 1000, "http": seconds * 1000 - timings["total"],
                               "route": timings["total"] - engine}.items():
                phases.setdefault(key, []).append(value)
    return {key: round(statistics.median(v), 2) for key, v in phases.items()}


def index_rate(catalogue: Path, encoder: str) -> dict:
    """``vestis index`` of ``catalogue`` into a fresh temporary collection: its own images/s, and
    the CPU time (all its threads) per image while it indexed. Its CPU is sampled as it runs, so the
    start-up (imports, the model) is left out: the report's ``seconds`` before its last sample."""
    with tempfile.TemporaryDirectory(prefix="vestis-api-load-") as tmp:
        load_average = os.getloadavg()[0]
        proc = subprocess.Popen([sys.executable, "-m", "vestis", "index", str(catalogue), "--collection",
                                 f"{tmp}/rate", "--encoder", encoder, "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        samples: list[tuple[float, float]] = []
        while proc.poll() is None:
            try:
                samples.append((time.perf_counter(), cpu_s(proc.pid)))
            except (OSError, ValueError, IndexError):  # the process ended between poll and read
                break
            time.sleep(0.02)
        out = proc.communicate()[0]
    if proc.returncode:
        raise SystemExit(f"vestis index exited with code {proc.returncode}")
    report = json.loads(out[out.index("{"):])
    end, cpu_end = samples[-1]
    cpu_start = next((cpu for t, cpu in reversed(samples) if t <= end - report["seconds"]), samples[0][1])
    images = max(1, report["embedded"])
    return {"images": report["embedded"], "seconds": report["seconds"], "images_per_second": report[
        "images_per_second"], "cpu_ms_per_image": round((cpu_end - cpu_start) * 1000 / images, 2),
        "cores_busy": round((cpu_end - cpu_start) / report["seconds"], 2), "load_average": round(load_average, 2)}


def bench_query(collection: Path, queries: Path, runs: int = 200) -> dict:
    """``vestis bench query``'s warm medians on the served collection (the one-client reference)."""
    done = subprocess.run([sys.executable, "-m", "vestis", "bench", "query", "--collection", str(collection),
                           str(queries), "--runs", str(runs), "--cold-runs", "0", "--json"], check=True, cwd=ROOT,
                          capture_output=True, text=True)
    warm = json.loads(done.stdout[done.stdout.index("{"):])["warm_ms"]
    return {phase: round(v["p50"], 2) for phase, v in warm.items()}


def _server(batch: int) -> str:
    return "unbatched" if batch <= 1 else f"batch <= {batch}"


def markdown(result: dict) -> str:
    index = result["index"]
    rate = statistics.mean(r["images_per_second"] for r in index) if index else None
    index_cpu = statistics.mean(r["cpu_ms_per_image"] for r in index) if index else None
    lines = [f"# API load, {result['date']}", "",
             (f"CPU: {result['cpu']}; {result['cores']} cores; load average at the start "
              f"{result['load_average']:.2f}; collection {result['items']:,} items ({result['encoder']}); "
              f"{result['queries'][1]} query JPEGs; {result['duration_s']:.0f} s per run; client `{result['client']}`."),
             ""]
    if index:
        lines += ["`vestis index` of the queries, fresh collection, same encoder: " + ", ".join(
            f"{r['images_per_second']} images/s ({r['cpu_ms_per_image']} ms CPU/image, {r['cores_busy']} cores busy, "
            f"load {r['load_average']})" for r in index) + f"; mean **{rate:.1f} images/s**, {index_cpu:.2f} ms CPU/image.",
                  "", ("vs index: queries/s over the mean images/s. At equal CPU: index CPU per image over server and "
                  "client CPU per upload, the ratio both would reach on the same busy cores (robust to other load)."),
                  ""]
    lines += [("| server | clients | requests | queries/s | p50 ms | p99 ms | errors | server CPU ms/req "
               "| of which event loop | client CPU ms/req | cores busy | mean batch | vs index | at equal CPU |"),
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        ratio = f"**{r['throughput_qps'] / rate:.2f}x**" if rate else "-"
        per_cpu = index_cpu / (r["server_cpu_ms_per_request"] + r["client_cpu_ms_per_request"]) if index_cpu else None
        equal = f"{per_cpu:.2f}x" if per_cpu else "-"
        lines.append(f"| {_server(r['batch'])} | {r['clients']} | {r['requests']} | {r['throughput_qps']} | "
                     f"{r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {r['server_cpu_ms_per_request']} | "
                     f"{r['event_loop_cpu_ms_per_request']} | {r['client_cpu_ms_per_request']} | {r['cores_busy']} | "
                     f"{r['mean_batch'] or '-'} | {ratio} | {equal} |")
    if result["bench_query"]:
        total = result["bench_query"]["total"]
        one = [r for r in result["runs"] if r["clients"] == 1]
        lines += ["", f"`vestis bench query` total p50 {total} ms"
                  + "".join(f"; one client p50 {r['p50_ms']} ms ({_server(r['batch'])}): "
                            f"**{r['p50_ms'] - total:+.1f} ms**" for r in one) + "."]
    if result["breakdown"]:
        phases = result["breakdown"]
        lines += ["", ("One client, uploads one at a time, medians in ms (route: the server's total less its "
                       "engine phases; http: the client's time less the server's total):"), "",
                  "| " + " | ".join(phases) + " |", "|" + "---:|" * len(phases),
                  "| " + " | ".join(str(v) for v in phases.values()) + " |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="Folder for api-load.json and api-load.md.")
    ap.add_argument("--source", type=Path, default=DATASETS / "fashion-product-images-small.zip")
    ap.add_argument("--queries", type=Path, default=DATASETS / "fashion-product-images-300.zip")
    ap.add_argument("--query-count", type=int, default=300)
    ap.add_argument("--duration", type=float, default=30.0, help="Seconds of load per client count.")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw", help="The load generator (see above).")
    ap.add_argument("--batch", type=int, nargs="+", default=[1], help="Servers to compare (vestis serve --batch).")
    ap.add_argument("--workers", type=int, default=None, help="Inference workers (default: the server's).")
    ap.add_argument("--breakdown", type=int, default=0,
                    help="Uploads timed one at a time against the first server, phase by phase (0: none).")
    ap.add_argument("--index-rounds", type=int, default=2,
                    help="Runs of vestis index on the queries, half before and half after the load (0: none).")
    ap.add_argument("--no-bench-query", action="store_true", help="Skip vestis bench query.")
    args = ap.parse_args()

    if not Collection.exists(args.collection):
        print(f"building {args.collection} from {args.source} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "vestis", "index", str(args.source), "--collection",
                        str(args.collection)], check=True, cwd=ROOT)
    with Collection.open(args.collection) as coll:
        items, encoder = len(coll), coll.encoder_source
    queries = load_queries(args.queries, args.query_count)
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": describe_cpu(),
                    "cores": os.cpu_count(), "load_average": os.getloadavg()[0], "items": items, "encoder": encoder,
                    "queries": [args.queries.name, len(queries)], "duration_s": args.duration, "client": args.client,
                    "command": " ".join(sys.argv), "index": [], "runs": [], "startup_s": {}}
    before = args.index_rounds - args.index_rounds // 2
    result["index"] += [index_rate(args.queries, encoder) for _ in range(before)]
    result["bench_query"] = {} if args.no_bench_query else bench_query(args.collection, args.queries)
    servers: dict[int, tuple[subprocess.Popen, int, list[bytes]]] = {}
    try:
        for batch in args.batch:
            port = free_port()
            proc, result["startup_s"][batch] = start_server(args.collection, port, args.workers, queries[0], batch)
            servers[batch] = proc, port, [upload_request(port, q) for q in queries]
            load(proc.pid, port, queries, servers[batch][2], 1, min(3.0, args.duration), args.client)  # warm-up
        first_port = next(iter(servers.values()))[1]
        result["breakdown"] = breakdown(f"http://127.0.0.1:{first_port}", queries, args.breakdown) \
            if args.breakdown else {}
        for clients in args.clients:
            for batch, (proc, port, requests) in servers.items():
                result["runs"].append({"batch": batch, **load(proc.pid, port, queries, requests, clients,
                                                              args.duration, args.client)})
    finally:
        for proc, _, _ in servers.values():
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    result["index"] += [index_rate(args.queries, encoder) for _ in range(args.index_rounds // 2)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "api-load.json").write_text(json.dumps(result, indent=2))
    report = markdown(result)
    (args.out / "api-load.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()

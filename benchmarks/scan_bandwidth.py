"""The exact scan against this machine's memory bandwidth, and half-precision tables, in one run.

    .venv/bin/python benchmarks/scan_bandwidth.py --out benchmarks/results/scan-bandwidth

Memory bandwidth, STREAM-style, in NumPy: *triad* ``a = b + s * c`` over float64 arrays of
``--stream-mib`` MiB each (far larger than the last-level cache), counted as STREAM counts it
(3 arrays moved per pass; NumPy actually moves 5, since it cannot fuse the multiply and the add:
both are reported), *copy* (``a[:] = b``, 2 arrays) and *read* (``x.sum()``, 1 array: the pattern of a
scan), on 1 and on every core (the arrays split into one slice per thread; NumPy releases the
GIL in these loops).

Exact scans of one query against ``--n`` x ``--dim`` random unit vectors (timing does not depend on
the values), top 10, as achieved bytes/s (table bytes / latency):

* float32, vestis's exact kernel (``vestis.index._common.exact_search``: BLAS), on 1 and all cores;
* (``--blocked``) float16 table, converted to float32 block by block into a cache-sized buffer and
  scored by BLAS (half the bytes from memory; the conversion runs in the core);
* float16 and bfloat16 tables scored by ``torch.matmul`` (PyTorch's own half-precision kernels);
* float16 table in FAISS (``IndexScalarQuantizer`` ``QT_fp16``, inner product).

All kernels are interleaved round by round (shuffled order), so machine load falls on all alike.
Top-10 agreement of each half-precision scan with float32 is reported.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from vestis.index.backend import exact_search, topk  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 10
BLOCK_BYTES = 512 << 10  # float32 bytes converted at once by the blocked float16 scan (fits L2)


def split(n: int, parts: int) -> list[slice]:
    edges = np.linspace(0, n, parts + 1).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


class Stream:
    """STREAM-style kernels over float64 arrays, on ``threads`` threads (one slice each)."""

    def __init__(self, mib: int, threads: int, pool: ThreadPoolExecutor):
        n = (mib << 20) // 8
        self.a, self.b, self.c = np.zeros(n), np.ones(n), np.full(n, 2.0)
        self.slices, self.pool, self.n = split(n, threads), pool, n

    def _run(self, fn: Callable[[slice], object]) -> None:
        list(self.pool.map(fn, self.slices))

    def triad(self) -> None:
        def part(s: slice) -> None:
            np.multiply(self.c[s], 3.0, out=self.a[s])
            np.add(self.a[s], self.b[s], out=self.a[s])
        self._run(part)

    def copy(self) -> None:
        self._run(lambda s: np.copyto(self.a[s], self.b[s]))

    def read(self) -> None:
        self._run(lambda s: self.b[s].sum())


class HalfScan:
    """A float16 table scanned block by block: convert to a float32 buffer, BLAS, top-k."""

    def __init__(self, table: np.ndarray, threads: int, pool: ThreadPoolExecutor):
        self.table, self.pool = table, pool
        self.block = max(K, BLOCK_BYTES // (4 * table.shape[1]))
        self.slices = split(len(table), threads)
        self.buffers = [np.empty((self.block, table.shape[1]), np.float32) for _ in self.slices]

    def _part(self, job: tuple[int, slice], q: np.ndarray) -> np.ndarray:
        i, s = job
        buf, out = self.buffers[i], np.empty(s.stop - s.start, np.float32)
        for a in range(s.start, s.stop, self.block):
            b = min(a + self.block, s.stop)
            np.copyto(buf[:b - a], self.table[a:b])
            np.matmul(buf[:b - a], q, out=out[a - s.start:b - s.start])
        return out

    def search(self, q: np.ndarray) -> np.ndarray:
        scores = np.concatenate(list(self.pool.map(lambda job: self._part(job, q), enumerate(self.slices))))
        return topk(scores[None], K)[1][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=139_709)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--stream-mib", type=int, default=256, help="size of each STREAM array")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--blocked", action="store_true", help="also time the blocked float16 -> float32 scan (slow)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scan-bandwidth")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    load = os.getloadavg()
    rng = np.random.default_rng(0)
    table = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    queries = table[rng.choice(args.n, args.rounds + 2)] + 0.05 * rng.standard_normal((args.rounds + 2, args.dim),
                                                                                      dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    half = table.astype(np.float16)
    t_half, t_bf16 = torch.from_numpy(half), torch.from_numpy(table).to(torch.bfloat16)
    sq = faiss.IndexScalarQuantizer(args.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    sq.add(table)
    f32_bytes, f16_bytes = table.nbytes, half.nbytes
    pools = {t: ThreadPoolExecutor(t) for t in {1, cores}}
    streams = {t: Stream(args.stream_mib, t, pools[t]) for t in pools}
    halves = {t: HalfScan(half, t, pools[t]) for t in pools}

    def fp32(t: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(q: np.ndarray) -> np.ndarray:
            with threadpool_limits(t):
                return exact_search(q[None], table, K)[1][0]
        return run

    def torch_scan(tensor: torch.Tensor, t: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(q: np.ndarray) -> np.ndarray:
            torch.set_num_threads(t)
            scores = torch.matmul(tensor, torch.from_numpy(q).to(tensor.dtype))
            return torch.topk(scores.float(), K).indices.numpy()
        return run

    def faiss_scan(t: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(q: np.ndarray) -> np.ndarray:
            faiss.omp_set_num_threads(t)
            return sq.search(q[None], K)[1][0]
        return run

    def half_scan(t: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(q: np.ndarray) -> np.ndarray:
            with threadpool_limits(1):
                return halves[t].search(q)
        return run

    scans: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]] = {}
    for t in sorted(pools):
        scans[f"float32 BLAS (vestis exact), {t} thread(s)"] = (fp32(t), f32_bytes)
        if args.blocked:
            scans[f"float16 blocked -> float32 BLAS, {t} thread(s)"] = (half_scan(t), f16_bytes)
        scans[f"float16 torch.matmul, {t} thread(s)"] = (torch_scan(t_half, t), f16_bytes)
        scans[f"bfloat16 torch.matmul, {t} thread(s)"] = (torch_scan(t_bf16, t), f16_bytes)
        scans[f"float16 FAISS SQfp16, {t} thread(s)"] = (faiss_scan(t), f16_bytes)
    kernels: dict[str, Callable[[], object]] = {}
    for t, s in streams.items():
        kernels[f"triad, {t} thread(s)"] = s.triad
        kernels[f"copy, {t} thread(s)"] = s.copy
        kernels[f"read (sum), {t} thread(s)"] = s.read

    reference = {i: fp32(cores)(q) for i, q in enumerate(queries)}
    agreement = {name: float(np.mean([len(set(fn(q)) & set(reference[i])) / K for i, q in enumerate(queries[:10])]))
                 for name, (fn, _) in scans.items()}
    names = list(scans) + list(kernels)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up
        (scans[name][0](queries[0]) if name in scans else kernels[name]())
    order_rng = np.random.default_rng(1)
    for r in range(args.rounds):
        for j in order_rng.permutation(len(names)):
            name = names[j]
            start = time.perf_counter()
            scans[name][0](queries[r + 1]) if name in scans else kernels[name]()
            times[name].append(time.perf_counter() - start)

    array_bytes = streams[1].n * 8
    moved = {"triad": (3, 5), "copy": (2, 2), "read": (1, 1)}
    rows_bw, rows_scan = [], []
    for name, fn in kernels.items():
        kind = name.split(",")[0].split(" ")[0]
        stream_count, actual = moved[kind]
        t = float(np.median(times[name]))
        rows_bw.append({"kernel": name, "ms": t * 1000, "gb_s_stream": stream_count * array_bytes / t / 1e9,
                        "gb_s_actual": actual * array_bytes / t / 1e9})
    by_name = {r["kernel"]: r for r in rows_bw}
    for name, (fn, nbytes) in scans.items():
        t = float(np.median(times[name]))
        threads = name.rsplit(", ", 1)[1]
        read, triad = by_name[f"read (sum), {threads}"], by_name[f"triad, {threads}"]
        rows_scan.append({"scan": name, "p50_ms": t * 1000, "table_mb": nbytes / 1e6, "gb_s": nbytes / t / 1e9,
                          "of_read": nbytes / t / 1e9 / read["gb_s_actual"],
                          "of_triad": nbytes / t / 1e9 / triad["gb_s_stream"], "top10_agreement": agreement[name]})
    lines = [f"{args.n:,} x {args.dim} random unit vectors; STREAM arrays {args.stream_mib} MiB each; "
             f"{args.rounds} interleaved rounds, medians; {cores} cores; load average at the start {load[0]:.1f}.",
             "", "| bandwidth kernel | ms | GB/s (STREAM count) | GB/s (bytes NumPy moves) |", "|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['ms']:.1f} | {r['gb_s_stream']:.1f} | {r['gb_s_actual']:.1f} |" for r in rows_bw]
    lines += ["", "| exact scan, one query, top 10 | p50 ms | table MB | achieved GB/s | of read bandwidth "
              "| of triad (STREAM count) | top-10 agreement with float32 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['scan']} | {r['p50_ms']:.2f} | {r['table_mb']:.0f} | {r['gb_s']:.1f} | "
              f"{100 * r['of_read']:.0f} % | {100 * r['of_triad']:.0f} % | {r['top10_agreement']:.2f} |"
              for r in rows_scan]
    lines.append("")
    lines.append("Read and triad at the same thread count as the scan.")
    markdown = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"bandwidth": rows_bw, "scans": rows_scan, "load_average": load, "cores": cores,
         "args": {k: str(v) for k, v in vars(args).items()}, "markdown": markdown}, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()

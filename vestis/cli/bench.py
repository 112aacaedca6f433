"""`vestis bench`: the ANN sweep and end-to-end query latency."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vestis.cli.common import CollectionOpt, app, console

bench_app = typer.Typer(help="Benchmarks: ANN index sweep and end-to-end query latency.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("ann")
def bench_ann_cmd(
    vectors: Annotated[str, typer.Option("--vectors", help="A collection directory, a .npy file, or 'generated'.")],
    out: Annotated[Path, typer.Option(help="Write results.json, results.md and recall_qps.png here.")] = Path("bench-ann"),
    n: Annotated[int | None, typer.Option("--n", help="Vectors to index (generated: required).")] = None,
    dim: Annotated[int | None, typer.Option(help="Dimension of generated vectors without --like.")] = None,
    like: Annotated[str | None, typer.Option(help="Generate vectors shaped like this collection / .npy.")] = None,
    backends: Annotated[str | None, typer.Option(help="Comma-separated backends of the sweep (default: all).")] = None,
    queries: Annotated[int, typer.Option(help="Held-out query vectors.")] = 1000,
    config: Annotated[Path | None, typer.Option(help="Sweep YAML (default: configs/ann-sweep.yaml).")] = None,
    threads: Annotated[int, typer.Option(help="BLAS / OpenMP threads for searches.")] = 1,
    build_threads: Annotated[int | None, typer.Option(help="Threads for builds (default: --threads).")] = None,
    build_budget: Annotated[float | None, typer.Option(help="Seconds a build may take (default: config).")] = None,
    query_budget: Annotated[float | None, typer.Option(help="Seconds per sweep point (default: config).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the query split and the generated vectors.")] = 0,
    cache: Annotated[Path | None, typer.Option(help="Prepared datasets (default: ~/.cache/vestis/bench).")] = None,
) -> None:
    """ANN sweep over every index backend: build time, memory, recall@10, latency p50/p99, throughput."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before FAISS loads OpenMP: idle threads must not spin
    from vestis.bench.ann import BenchSettings, run_ann_bench

    settings = BenchSettings(threads=threads, build_threads=build_threads, backends=[b.strip() for b in backends.split(",")] if backends else None,
                             build_budget_s=build_budget, query_budget_s=query_budget)
    result = run_ann_bench(vectors, out, n=n, dim=dim, queries=queries, like=like, config=config, settings=settings,
                           seed=seed, cache_dir=cache, command="vestis " + " ".join(sys.argv[1:]),
                           log=lambda line: console.print(line, highlight=False, markup=False))
    table = Table(title=f"fastest per backend at recall@10 >= 0.95: {result['dataset']['label']}")
    for column in ("backend", "spec", "recall@10", "p50 ms", "p99 ms", "batch q/s", "memory B/item"):
        table.add_column(column)
    for r in sorted(result["best"].values(), key=lambda r: r["p50_ms"]):
        table.add_row(r["backend"], r["spec"], f"{r['recall']:.3f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
                      f"{r['batch_qps']:.0f}", f"{r['mem_bytes_per_item']:.0f}")
    Console().print(table)
    console.print(f"report: {result['files']['markdown']}, {result['files']['plot']}, {result['files']['json']}")


@bench_app.command("query")
def bench_query_cmd(
    collection: CollectionOpt,
    images: Annotated[list[Path], typer.Argument(help="Query image files, or .zip archives of images.")],
    runs: Annotated[int, typer.Option(help="Timed queries (cycling through the images).")] = 200,
    cold_runs: Annotated[int, typer.Option(help="Fresh `vestis search` processes for the cold start (0: skip).")] = 5,
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Also write query.json and query.md here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """End-to-end query latency split into decode, preprocess, embed, colour, search, fetch; and cold start."""
    from vestis.bench.query import markdown, run_query_bench

    result = run_query_bench(collection, images, runs=runs, cold_runs=cold_runs, k=k,
                             command="vestis " + " ".join(sys.argv[1:]))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "query.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "query.md").write_text(markdown(result))
    print(json.dumps(result, indent=2) if as_json else markdown(result))


"""The ANN sweep's report: the best point per backend, the Pareto frontier, Markdown and the
recall / throughput plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGET_RECALL = 0.95


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

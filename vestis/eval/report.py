"""Write an evaluation report: metrics.json, report.md (tables) and PNG plots.

``results`` is the dict returned by the protocols (several may be merged into one):
- scalar entries (``mAP@10``, ``P@10``, ``n_queries``, ``attribute_mAP``, ``kNN_accuracy``...) go to
  the overall tables; ``<metric>@<K>`` entries are also plotted against K;
- ``attributes`` (from ``attribute_map``): a per-attribute table and bar chart;
- ``per_class_accuracy`` and ``confusion_matrix`` (from ``knn_accuracy``): a per-class table and a
  row-normalised confusion matrix image.
Other nested entries are kept in metrics.json only.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # renders with Agg; no pyplot global state, safe in threads

AT_K = re.compile(r"^(?P<metric>[A-Za-z_]+)@(?P<k>\d+)$")


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null (they are not valid JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table (lines, then a blank line); floats with 4 decimals."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _at_k(results: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    """{"mAP": {1: .., 10: ..}, "P": {...}, ...} from the ``<metric>@<K>`` entries."""
    out: dict[str, dict[int, float]] = {}
    for key, value in results.items():
        m = AT_K.match(key)
        if m and isinstance(value, (int, float)):
            out.setdefault(m["metric"], {})[int(m["k"])] = float(value)
    return out


def _plot_at_k(at_k: dict[str, dict[int, float]], path: Path, title: str) -> None:
    """One panel per metric (mAP, P, R, NDCG) so that values printed at each K never overlap."""
    ncols = min(2, len(at_k))
    nrows = math.ceil(len(at_k) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for i, (ax, (metric, values)) in enumerate(zip(axes, at_k.items())):
        ks = sorted(values)
        ys = [values[k] for k in ks]
        ax.plot(range(len(ks)), ys, marker="o", color=f"C{i}")
        for x, y in enumerate(ys):
            ax.annotate(_fmt(y), (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=9)
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_xlim(-0.5, len(ks) - 0.5)
        ax.set_ylim(0, 1.12)
        ax.set_xlabel("K (results considered)")
        ax.set_ylabel(f"{metric}@K")
        ax.set_title(f"{metric}@K")
        ax.grid(alpha=0.3)
    for ax in axes[len(at_k):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: retrieval metrics at K")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _subplots(figsize: tuple[float, float]):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _plot_attributes(attributes: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> None:
    names = list(attributes)
    values = [float(attributes[a]["mAP"]) for a in names]
    fig, ax = _subplots(figsize=(7, max(3.0, 0.45 * len(names) + 1.5)))
    bars = ax.barh(names, np.nan_to_num(values), color="tab:blue")
    ax.bar_label(bars, labels=[_fmt(v) for v in values], padding=3, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("MAP (full ranking)")
    ax.set_ylabel("attribute")
    ax.set_title(f"{title}: attribute-specific MAP")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_confusion(confusion: Mapping[str, Any], path: Path, title: str) -> None:
    labels = list(confusion["labels"])
    matrix = np.asarray(confusion["matrix"], dtype=float)
    support = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, support, out=np.zeros_like(matrix), where=support > 0)
    size = max(5.0, 0.45 * len(labels) + 2.5)
    fig, ax = _subplots(figsize=(size, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    if len(labels) <= 20:
        for i, j in np.ndindex(norm.shape):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}: confusion matrix (rows normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(out_dir: str | Path, results: Mapping[str, Any], *, title: str, command: str,
                 examples: Sequence[tuple[str, str | Path]] | None = None) -> Path:
    """Write metrics.json, report.md and the plots into ``out_dir`` (created if needed).

    ``command`` is the exact command line that produced the results (for reproducibility);
    ``examples`` lists (caption, PNG path) of query result grids, linked from report.md.
    Returns the path of report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_jsonable(results), indent=2, allow_nan=False) + "\n")

    md = [f"# {title}", "", "Command:", "", "```", command, "```", ""]
    at_k = _at_k(results)
    if at_k:
        ks = sorted({k for v in at_k.values() for k in v})
        md += ["## Retrieval metrics at K", ""]
        md += markdown_table(["metric"] + [f"K={k}" for k in ks],
                     [[f"{m}@K"] + [values.get(k, "") for k in ks] for m, values in at_k.items()])
        md += [("mAP@K: average precision over the top K normalised by min(K, relevant items); "
                "P@K: relevant results in the top K / K; R@K: queries with at least one relevant result "
                "in the top K; NDCG@K: binary gains, log2 discount."), "",
               "![metrics at K](metrics_at_k.png)", ""]
        _plot_at_k(at_k, out / "metrics_at_k.png", title)
    scalars = [(k, v) for k, v in results.items()
               if isinstance(v, (int, float, str)) and not AT_K.match(k)]
    if scalars:
        md += ["## Overall", ""] + markdown_table(["measure", "value"], scalars)

    attributes = results.get("attributes")
    if attributes:
        md += ["## Attribute-specific MAP", ""]
        md += markdown_table(["attribute", "MAP", "queries", "queries without relevant", "candidates"],
                     [[a, r["mAP"], r["n_queries"], r["n_queries_without_relevant"], r["n_candidates"]]
                      for a, r in attributes.items()])
        for attr, r in attributes.items():
            md += [f"### {attr}: MAP per value", ""]
            md += markdown_table(["value", "MAP", "queries"],
                         [[v, s["mAP"], s["n_queries"]] for v, s in r["values"].items()])
        md += ["![attribute MAP](attribute_map.png)", ""]
        _plot_attributes(attributes, out / "attribute_map.png", title)

    per_class = results.get("per_class_accuracy")
    if per_class:
        md += ["## Per-class accuracy", ""] + markdown_table(["class", "accuracy"], list(per_class.items()))
    confusion = results.get("confusion_matrix")
    if confusion:
        md += ["## Confusion matrix", "", "![confusion matrix](confusion_matrix.png)", ""]
        _plot_confusion(confusion, out / "confusion_matrix.png", title)

    if examples:
        md += ["## Example queries", ""]
        for caption, png in examples:
            link = Path(os.path.relpath(Path(png).resolve(), out.resolve())).as_posix()
            md += [f"### {caption}", "", f"![{caption}]({link})", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path

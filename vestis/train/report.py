"""A training run's report: ``report.md`` in the run folder and the console table of
``vestis train``: the in-domain test figures of the trained model beside the untrained backbone's,
and the transfer sets (:mod:`vestis.train.transfer`) with a warning for each one the model made worse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from vestis.eval.report import markdown_table
from vestis.train.trainer import VAL_METRIC
from vestis.train.transfer import JUDGED_BY, METRICS, change_text, judged_by


def rows(summary: dict[str, Any]) -> list[list[Any]]:
    """(where, judged by, model, metric values..., backbone values..., change of mAP@10, its 95 %
    interval or None) per line: the in-domain test first (stage-1 runs, which have a backbone
    baseline), then each transfer set."""
    out = []
    test, base = summary.get("test", {}), summary.get("test_baseline")
    if base and JUDGED_BY in test:
        out.append(["in domain (test split)", ", ".join(summary.get("eval_labels") or summary.get("labels", [])),
                    *[test[m] for m in METRICS], *[base[m] for m in METRICS],
                    test[JUDGED_BY] / base[JUDGED_BY] - 1, summary.get(f"test_{JUDGED_BY}_change_ci95")])
    for name, r in summary.get("transfer", {}).items():
        out.append([name, judged_by(r), *[r["model"][m] for m in METRICS], *[r["backbone"][m] for m in METRICS],
                    r[f"{JUDGED_BY}_change"], r.get(f"{JUDGED_BY}_change_ci95")])
    return out


def attribute_line(summary: dict[str, Any]) -> str | None:
    """An attribute-aware run's in-domain figure (attribute MAP of the test split, which the table's
    metrics do not measure) against the backbone's global features; None for other runs."""
    test = summary.get("test", {})
    if "attribute_mAP" not in test.get("model", {}):
        return None
    model, base = test["model"]["attribute_mAP"], test["global_features"]["attribute_mAP"]
    return (f"In domain (test split): attribute MAP {model:.4f} against {base:.4f} for the backbone's global "
            f"features ({model / base - 1:+.1%}).")


def model_line(summary: dict[str, Any]) -> str | None:
    """Which weights the run kept: the best epoch by validation mAP@10 and, with weight averaging
    (``train.average_from``), the epochs averaged into it; None when the summary has no history."""
    best = summary.get("best_epoch")
    record = next((h for h in summary.get("history", []) if h["epoch"] == best), None)
    if record is None:
        return None
    line = f"Model kept: epoch {best} of {summary['epochs_run']} (validation {VAL_METRIC} {record[VAL_METRIC]:.4f})"
    averaged = record.get("averaged_epochs", 0)
    if averaged > 1:
        line += f", the average of the weights at the end of epochs {best - averaged + 1} to {best}"
    return line + "."


HEADER = ["set", "judged by", *[f"model {m}" for m in METRICS], *[f"backbone {m}" for m in METRICS],
          f"{JUDGED_BY} change"]


def write_run_report(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``report.md`` (what was trained, in-domain and transfer figures, warnings)."""
    md = [f"# Training run {summary['name']}", ""]
    for line in (model_line(summary), attribute_line(summary)):
        if line:
            md += [line, ""]
    lines = rows(summary)
    if lines:
        md += ["Leave-one-out on each transfer set (a cross-collection set: its queries against its gallery, "
               "relevance from its label map); the test split against the rest outside training in "
               "domain. Backbone: the untrained backbone's features. The interval of a change is a paired "
               "bootstrap over the queries: a change inside it can be the sampling noise of too few "
               "queries.", ""]
        md += markdown_table(HEADER, [[*r[:-2], change_text(*r[-2:])] for r in lines])
    for note in summary.get("transfer_skipped", []):
        md += [f"- {note}"]
    for warning in summary.get("transfer_warnings", []):
        md += [f"- **WARNING**: {warning}"]
    path = Path(run_dir) / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def console_table(summary: dict[str, Any]) -> Table | None:
    """The same figures for the terminal (None when the run has none)."""
    lines = rows(summary)
    if not lines:
        return None
    caption = "\n".join(line for line in (model_line(summary), attribute_line(summary)) if line)
    table = Table(title=f"{summary['name']}: trained model vs untrained backbone", caption=caption or None)
    for column in HEADER[:-1]:
        table.add_column(column, justify="left" if column in HEADER[:2] else "right")
    table.add_column(f"{HEADER[-1]}\n[95% CI]", justify="right", no_wrap=True)
    for r in lines:
        change = f"[{'red' if r[-2] < 0 else 'green'}]{change_text(*r[-2:], compact=True)}[/]"
        table.add_row(*[str(v) for v in r[:2]], *[f"{v:.4f}" for v in r[2:-2]], change)
    return table

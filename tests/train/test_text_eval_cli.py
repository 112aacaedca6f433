"""`vestis eval --text` on a small real collection with a trained joint model: the report's figures
are real numbers in range and the files are written."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from tests.train.test_train_joint import trained  # noqa: F401 (fixture)
from vestis.cli import app


def _numbers(tree, path=""):
    """Every number in a JSON tree, with its path."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _numbers(value, f"{path}/{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _numbers(value, f"{path}/{i}")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


@pytest.mark.slow
def test_text_eval_reports_measured_figures(trained, garment_collection, tmp_path):  # noqa: F811
    _summary, run = trained
    collection = tmp_path / "collection"
    shutil.copytree(garment_collection, collection)  # the session's collection stays without a joint index
    runner = CliRunner()
    built = runner.invoke(app, ["text", "build", "--collection", str(collection), "--model", str(run)])
    assert built.exit_code == 0, built.output
    report = tmp_path / "report"
    args = ["eval", "--collection", str(collection), "--text", "--split-file", str(run / "split.csv"),
            "--report", str(report)]
    refused = runner.invoke(app, args)  # the default 5 items per label pair: none in a 54-item collection
    assert refused.exit_code != 0 and "--min-items" in str(refused.exception) + refused.output
    result = runner.invoke(app, [*args, "--min-items", "1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert json.loads(result.stdout) == metrics
    assert (report / "report.md").read_text().count("## ") >= 4
    assert metrics["n_test"] > 0 and metrics["n_val"] > 0
    for path, value in _numbers(metrics):
        assert math.isfinite(value), path
        if "P@10" in path or "mAP@10" in path or "R@" in path or "weight" in path:
            assert 0 <= value <= 1, (path, value)
        if path.startswith("/latency") and path.endswith("ms"):
            assert value > 0, path
    labels = metrics["label queries"]["baseColour+articleType/own words"]
    assert labels["n_queries"] > 0
    for mode in ("keyword", "vector", "hybrid"):
        assert 0 <= labels[mode]["mAP@10"] <= 1 and 0 <= labels[mode]["P@10"] <= 1
    # the items of a (colour, shape) pair look alike: the trained space finds them in words
    assert labels["vector"]["mAP@10"] > 0.5
    assert metrics["composed"]["n_queries"] > 0 and 0 <= metrics["composed"]["image only"] <= 1
    assert metrics["fusion"]["kind"] in ("rrf", "weighted")
    assert metrics["latency"]["queries"] > 0 and metrics["latency"]["items"] == 54

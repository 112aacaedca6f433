"""`vestis train` end to end on a tiny collection: every artefact of a run is written."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from vestis.eval.protocols import load_split
from vestis.train.command import train_from_config


def test_train_from_config_writes_the_run(garment_config):
    summary = train_from_config(garment_config, ["train.epochs=3", "head.kind=cosface"])
    run_dir = summary["run_dir"]
    files = {p.name for p in Path(run_dir).iterdir()}
    assert {"config.yaml", "split.csv", "best.pt", "last.pt", "curves.png", "metrics.json"} <= files
    saved = yaml.safe_load(Path(run_dir, "config.yaml").read_text())
    assert saved["head"]["kind"] == "cosface" and saved["train"]["epochs"] == 3
    metrics = json.loads(Path(run_dir, "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and len(metrics["history"]) == 3
    for key in ("mAP@10", "P@10", "P@50", "R@1"):
        assert 0 <= metrics["test"][key] <= 1 and 0 <= metrics["test_baseline"][key] <= 1
    split = load_split(f"{run_dir}/split.csv")
    assert metrics["split_sizes"] == {s: list(split.values()).count(s) for s in ("train", "val", "test")}
    assert metrics["test"]["n_queries"] + metrics["test"]["n_queries_without_relevant"] == metrics["split_sizes"]["test"]

"""Transfer sets: `vestis train` scores the trained model and the untrained backbone on other
collections (leave-one-out, relevant = the same label), reports them in metrics.json, report.md
and the console, and warns when the model is worse; the variants that keep the backbone's
knowledge (a fused retrieval embedding, similarity distillation) do what they say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tests.train.conftest import other_garments
from vestis.errors import VestisError
from vestis.eval.protocols import leave_one_out
from vestis.train.command import prepare, run
from vestis.train.config import DataConfig, load_config
from vestis.train.features import load_items
from vestis.train.heads import EmbeddingHead, SimilarityDistillation
from vestis.train.trainer import Trainer, load_checkpoint
from vestis.train.transfer import change_text, warnings_for

def _with_transfer(config: Path, sets: list[dict]) -> Path:
    raw = yaml.safe_load(config.read_text())
    raw["transfer"] = sets
    config.write_text(yaml.safe_dump(raw))
    return config


def test_run_reports_each_transfer_set_for_model_and_backbone(garment_config, transfer_collection, tmp_path):
    config = _with_transfer(garment_config, [
        {"collection": str(transfer_collection), "label": "category", "name": "other-garments"},
        {"collection": str(tmp_path / "not-built"), "label": "label", "name": "absent"}])
    summary = run(load_config(config, ["train.epochs=3"]))
    assert set(summary["transfer"]) == {"other-garments"}
    result = summary["transfer"]["other-garments"]
    assert result["label"] == "category" and result["items"] == 27

    items = load_items(DataConfig(collection=str(transfer_collection)), tmp_path)
    labels = items.groups(["category"])
    backbone = leave_one_out(items.vectors, labels, (1, 10))
    ckpt = load_checkpoint(Path(summary["run_dir"]) / "best.pt")
    head = EmbeddingHead(ckpt["in_dim"], 32)
    head.load_state_dict(ckpt["model"])
    with torch.no_grad():
        model = leave_one_out(head.eval().embed(torch.from_numpy(items.vectors)).numpy(), labels, (1, 10))
    for metric in ("mAP@10", "P@10", "R@1"):
        assert result["backbone"][metric] == pytest.approx(backbone[metric])
        assert result["model"][metric] == pytest.approx(model[metric])
        assert 0 < result["model"][metric] <= 1
    assert result["model"]["n_queries"] == result["backbone"]["n_queries"] == 27
    assert result["worse"] == (result["model"]["mAP@10"] < result["backbone"]["mAP@10"])
    assert result["mAP@10_change"] == pytest.approx(result["model"]["mAP@10"] / result["backbone"]["mAP@10"] - 1)
    assert len(summary["transfer_warnings"]) == int(result["worse"])
    low, high = result["mAP@10_change_ci95"]
    assert low <= result["mAP@10_change"] <= high
    assert result["worse_beyond_noise"] == (high < 0)
    (note,) = summary["transfer_skipped"]
    assert "absent" in note and "no collection" in note

    on_disk = json.loads((Path(summary["run_dir"]) / "metrics.json").read_text())
    assert on_disk["transfer"]["other-garments"]["model"] == result["model"]
    report = Path(summary["report"]).read_text()
    assert "| other-garments | category | " + f"{result['model']['mAP@10']:.4f}" in report
    assert "| in domain (test split) | articleType, baseColour | " + f"{summary['test']['mAP@10']:.4f}" in report
    # each change with its interval over the queries, in domain and out
    change = summary["test"]["mAP@10"] / summary["test_baseline"]["mAP@10"] - 1
    low, high = summary["test_mAP@10_change_ci95"]
    assert low <= change <= high and f"{change:+.1%} (95% CI {low:+.1%} to {high:+.1%}) |" in report
    low, high = result["mAP@10_change_ci95"]
    assert f"{result['mAP@10_change']:+.1%} (95% CI {low:+.1%} to {high:+.1%}) |" in report
    assert "absent" in report


def test_the_warning_names_each_set_the_model_made_worse_and_whether_beyond_noise():
    def entry(model: float, backbone: float, ci: list[float]) -> dict:
        return {"label": "category", "model": {"mAP@10": model, "n_queries": 1104},
                "backbone": {"mAP@10": backbone},
                "mAP@10_change": model / backbone - 1, "mAP@10_change_ci95": ci, "worse": model < backbone,
                "worse_beyond_noise": ci[1] < 0}

    warnings = warnings_for({"a": entry(0.184, 0.286, [-0.40, -0.31]), "b": entry(0.30, 0.286, [0.01, 0.09]),
                             "c": entry(0.2849, 0.2856, [-0.018, 0.016])})
    assert len(warnings) == 2
    assert "WORSE" in warnings[0] and " a " in warnings[0]
    assert "0.1840 vs 0.2860, -35.7% (95% CI -40.0% to -31.0%)" in warnings[0]
    assert "beyond the sampling noise of its 1104 queries" in warnings[0]
    assert " c " in warnings[1] and "within the sampling noise" in warnings[1]
    # a set of one query has no interval: the change alone; the console's narrow column: two lines
    assert change_text(-0.01, [float("nan"), float("nan")]) == "-1.0%"
    assert change_text(0.016, [-0.007, 0.042], compact=True) == "+1.6%\n[-0.7, +4.2]"


def test_cli_prints_the_transfer_table_and_notes(garment_config, transfer_collection, tmp_path):
    from vestis.cli import app

    config = _with_transfer(garment_config, [
        {"collection": str(transfer_collection), "label": "category", "name": "other-garments"},
        {"collection": str(tmp_path / "not-built"), "label": "label", "name": "absent"}])
    res = CliRunner().invoke(app, ["train", "--config", str(config), "--set", "train.epochs=2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[:res.stdout.rindex("}") + 1])
    assert "other-garments" in summary["transfer"]
    assert "trained model vs untrained backbone" in res.output and "note:" in res.output
    assert ("WARNING" in res.output) == summary["transfer"]["other-garments"]["worse"]


@pytest.mark.parametrize("problem, message", [
    ("required", "no collection at"),
    ("label", "no item has the label column"),
    ("encoder", "re-index it with the training backbone"),
])
def test_a_transfer_set_that_cannot_be_measured_fails_before_training(garment_config, transfer_collection,
                                                                       tmp_path, problem, message):
    tset = {"collection": str(transfer_collection), "label": "category"}
    if problem == "required":
        tset = {"collection": str(tmp_path / "not-built"), "label": "category", "required": True}
    elif problem == "label":
        tset["label"] = "sleeve"
    else:
        tset["collection"] = str(other_garments(tmp_path / "other-encoder", encoder_version="another/1"))
    config = _with_transfer(garment_config, [tset])
    with pytest.raises(VestisError, match=message):
        run(load_config(config))
    assert not (tmp_path / "run" / "best.pt").exists()


def test_fused_embedding_mixes_centred_backbone_and_head_similarities(garment_config, tmp_path):
    cfg = load_config(garment_config, ["train.epochs=2", "head.backbone_weight=0.4"])
    task = prepare(cfg)
    Trainer(cfg, task, cfg.run_dir).fit()
    features = torch.from_numpy(task.items.vectors)
    with torch.no_grad():
        fused = task.head.eval().embed(features).numpy()
        head = torch.nn.functional.normalize(task.head(features), dim=1).numpy()
    unit = task.items.vectors / np.linalg.norm(task.items.vectors, axis=1, keepdims=True)
    centred = unit - unit[task.rows("train")].mean(axis=0)  # the mean training feature
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    assert fused.shape == (len(features), 1280 + 32) == (len(features), task.head.out_dim)
    np.testing.assert_allclose(fused @ fused.T, 0.4 * centred @ centred.T + 0.6 * head @ head.T, atol=1e-5)

    from vestis.train.export import export_checkpoint

    sidecar = json.loads(export_checkpoint(cfg.run_dir / "best.pt", tmp_path / "fused.onnx").with_suffix(".json")
                         .read_text())
    assert sidecar["dim"] == 1280 + 32 and sidecar["onnx_max_abs_diff"] <= 1e-4


def test_distillation_is_part_of_the_training_loss(garment_config):
    """With head.distill the loss the trainer minimises is the head's loss plus the distillation
    term on the batch's backbone features; without it, the head's loss alone."""
    with_term = prepare(load_config(garment_config, ["head.distill=10"]))
    without = prepare(load_config(garment_config))
    inputs = torch.from_numpy(with_term.items.vectors[:24])
    labels = torch.from_numpy(np.maximum(with_term.labels[:24], 0))
    for task in (with_term, without):
        task.model.eval()
        task.criterion.eval()
    with torch.no_grad():
        embeddings = with_term.model(inputs)
        expected = with_term.criterion(embeddings, labels)[0] + SimilarityDistillation(10.0)(inputs, embeddings)
        assert float(with_term.loss(inputs, labels)) == pytest.approx(float(expected), rel=1e-5)
        assert float(without.loss(inputs, labels)) == pytest.approx(
            float(without.criterion(without.model(inputs), labels)[0]), rel=1e-5)
    assert without.regulariser is None


def test_distillation_term_is_zero_for_the_backbones_order_of_neighbours():
    features = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    term = SimilarityDistillation(3.0)
    assert float(term(features, 2.5 * features)) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    b = torch.nn.functional.normalize(features, dim=1)
    h = torch.nn.functional.normalize(other, dim=1)
    off = ~torch.eye(16, dtype=torch.bool)
    correlations = [np.corrcoef((b @ b.T)[off].reshape(16, 15)[i], (h @ h.T)[off].reshape(16, 15)[i])[0, 1]
                    for i in range(16)]
    assert float(term(features, other)) == pytest.approx(3.0 * (1 - np.mean(correlations)), rel=1e-4)


@pytest.mark.slow
def test_the_transfer_variants_benchmark_scores_a_variant_as_vestis_train_does(garment_config, transfer_collection,
                                                                              tmp_path):
    """benchmarks/transfer_variants.py (BENCHMARKS.md "Transfer") trains each variant like `vestis
    train` and re-scores it: its unchanged row (w 0, a 1) equals the run's own figures."""
    import os
    import subprocess
    import sys

    config = _with_transfer(garment_config, [{"collection": str(transfer_collection), "label": "category",
                                              "name": "other-garments"}])
    root = Path(__file__).parents[2]

    def variants(*extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, str(root / "benchmarks/transfer_variants.py"), "--config", str(config),
                               "--variant", "residual:head.residual=true;head.anchor=0.001;train.epochs=2",
                               "--interpolations", "1,0.5", "--out", str(tmp_path / "variants"), *extra],
                              capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    done = variants()
    rows = json.loads((tmp_path / "variants" / "results.json").read_text())
    assert [(r["variant"], r["interpolate"]) for r in rows] == [("residual", 1.0), ("residual", 0.5)]
    trained = json.loads((tmp_path / "variants" / "residual" / "metrics.json").read_text())
    assert rows[0]["test"]["mAP@10"] == pytest.approx(trained["test"]["mAP@10"])
    assert rows[0]["transfer"]["other-garments"]["model"] == pytest.approx(trained["transfer"]["other-garments"]["model"])
    assert rows[1]["transfer"]["other-garments"]["backbone"] == trained["transfer"]["other-garments"]["backbone"]
    assert "| residual | 0 | 0.5 |" in done.stdout
    # --reuse scores the finished run again without training it: the same rows, the checkpoint untouched
    checkpoint = tmp_path / "variants" / "residual" / "best.pt"
    stamp = checkpoint.stat().st_mtime_ns
    variants("--reuse")
    assert checkpoint.stat().st_mtime_ns == stamp
    again = json.loads((tmp_path / "variants" / "results.json").read_text())
    assert [r["transfer"] for r in again] == [r["transfer"] for r in rows]

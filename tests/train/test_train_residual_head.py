"""The residual head: the centred backbone feature plus a learned correction that starts at zero,
an anchor penalty that keeps the correction small, and interpolation of the trained correction
with the identity in the retrieval embedding (and in its ONNX export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from vestis.errors import VestisError
from vestis.train.command import prepare, run
from vestis.train.config import load_config
from vestis.train.heads import IdentityAnchor
from vestis.train.trainer import Trainer, load_checkpoint


def _centred(vectors: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    centred = unit - unit[train_rows].mean(axis=0)
    return centred / np.linalg.norm(centred, axis=1, keepdims=True)


def test_an_untrained_residual_head_is_the_centred_backbone(garment_config):
    task = prepare(load_config(garment_config, ["head.residual=true", "head.dim=16"]))
    head = task.head.eval()
    assert (head.dim, head.rank, head.out_dim) == (1280, 16, 1280)
    assert task.criterion.margin_loss.W.shape[0] == 1280  # the class weights live in the head's space
    with torch.no_grad():
        embedded = head.embed(torch.from_numpy(task.items.vectors)).numpy()
    np.testing.assert_allclose(embedded, _centred(task.items.vectors, task.rows("train")), atol=1e-5)
    assert float(head.correction_norm().detach()) == 0.0


def test_interpolation_scales_the_trained_correction(garment_config):
    cfg = load_config(garment_config, ["head.residual=true", "head.dim=16", "train.epochs=2"])
    task = prepare(cfg)
    Trainer(cfg, task, cfg.run_dir).fit()
    head = task.head.eval()
    features = torch.from_numpy(task.items.vectors)
    z = torch.from_numpy(_centred(task.items.vectors, task.rows("train")))
    correction = z @ (head.up.weight @ head.down.weight).T.detach()
    assert float(correction.norm()) > 0.1  # training moved the head away from the identity
    with torch.no_grad():
        for a in (1.0, 0.4, 0.0):
            head.interpolate = a
            np.testing.assert_allclose(head.embed(features).numpy(), F.normalize(z + a * correction, dim=1).numpy(),
                                       atol=1e-5)
        head.interpolate = 1.0
        np.testing.assert_allclose(head.embed(features).numpy(), F.normalize(head(features), dim=1).numpy(),
                                   atol=1e-6)
    with torch.no_grad():
        assert float(head.correction_norm()) == pytest.approx(float((head.up.weight @ head.down.weight).pow(2).sum()),
                                                              rel=1e-4)


def test_the_anchor_is_part_of_the_loss_and_keeps_the_head_near_the_identity(garment_config, tmp_path):
    norms = {}
    for anchor in (0.0, 1000.0):  # AdamW scales steps per weight: the penalty must rival the loss's gradient
        cfg = load_config(garment_config, ["head.residual=true", "head.dim=16", "train.epochs=6",
                                           f"head.anchor={anchor}", f"output={tmp_path / str(anchor)}"])
        task = prepare(cfg)
        if anchor:
            inputs = torch.from_numpy(task.items.vectors[:24])
            labels = torch.from_numpy(np.maximum(task.labels[:24], 0))
            with torch.no_grad():
                task.head.up.weight.normal_()  # a head away from the identity
                task.criterion.eval()
                expected = task.criterion(task.model(inputs), labels)[0] + anchor * task.head.correction_norm()
                assert float(task.loss(inputs, labels)) == pytest.approx(float(expected), rel=1e-5)
                task.head.up.weight.zero_()
        Trainer(cfg, task, cfg.run_dir).fit()
        last = load_checkpoint(cfg.run_dir / "last.pt")["model"]  # the best epoch may be the first
        norms[anchor] = float((last["up.weight"] @ last["down.weight"]).pow(2).sum())
    assert 0 < norms[1000.0] < norms[0.0] / 2
    head = prepare(load_config(garment_config, ["head.residual=true"])).head
    assert IdentityAnchor(head, 2.0)(torch.zeros(1), torch.zeros(1)).item() == 0.0


@pytest.mark.slow
def test_the_export_has_the_interpolated_residual_head_and_the_fused_backbone(garment_config, make_garment):
    """`vestis train` exports what it measured: the ONNX encoder embeds photos as the head does
    (interpolated correction, centred backbone beside it)."""
    from vestis.encoders import get_encoder

    cfg = load_config(garment_config, ["head.residual=true", "head.dim=16", "train.epochs=2", "export.onnx=true",
                                       "head.interpolate=0.5", "head.backbone_weight=0.3"])
    summary = run(cfg)
    meta = json.loads(Path(summary["onnx"]).with_suffix(".json").read_text())
    assert meta["dim"] == 2 * 1280 and meta["onnx_max_abs_diff"] <= 1e-4
    task = prepare(cfg)
    task.head.load_state_dict(load_checkpoint(Path(summary["run_dir"]) / "best.pt")["model"])
    images = [make_garment((200, 30, 30), "shirt", seed=3), make_garment((30, 50, 200), "dress", seed=4)]
    backbone = get_encoder("efficientnet-lite0").embed_images(images)
    exported = get_encoder(summary["onnx"]).embed_images(images)
    with torch.no_grad():
        expected = task.head.eval().embed(torch.from_numpy(backbone)).numpy()
    np.testing.assert_allclose(exported, expected, atol=1e-4)


@pytest.mark.parametrize("residual", [True, False])
def test_class_weights_can_start_at_the_class_means(garment_config, residual):
    task = prepare(load_config(garment_config, [f"head.residual={str(residual).lower()}", "head.class_init=means"]))
    rows = task.rows("train")
    with torch.no_grad():
        embeddings = F.normalize(task.head.eval()(torch.from_numpy(task.items.vectors[rows])), dim=1).numpy()
    weights = task.criterion.margin_loss.W.detach().numpy()
    assert weights.shape == (task.head.dim, len(task.classes)) == (1280 if residual else 32, 9)
    for c in range(len(task.classes)):  # every garment class has several training items
        mean = embeddings[task.labels[rows] == c].mean(axis=0)
        np.testing.assert_allclose(weights[:, c], mean / np.linalg.norm(mean), atol=1e-5)
    cosine = F.normalize(torch.from_numpy(embeddings), dim=1) @ F.normalize(torch.from_numpy(weights), dim=0)
    assert float((cosine.argmax(dim=1).numpy() == task.labels[rows]).mean()) > 0.9  # nearest class mean


@pytest.mark.parametrize("overrides, message", [
    (["head.class_init=means", "head.kind=triplet"], "arcface and cosface"),
    (["head.class_init=median"], "head.class_init"),
    (["head.anchor=0.1"], "set head.residual=true"),
    (["head.interpolate=0.5"], "set head.residual=true"),
    (["head.residual=true", "head.interpolate=1.5"], "head.interpolate in"),
    (["head.residual=true", "head.anchor=-1"], "head.anchor must be >= 0"),
    (["head.residual=true", "kind=finetune"], "starts from its stage-1 checkpoint"),
    (["head.distill=1", "kind=finetune"], "kind embedding \\(stage 1\\) only"),
])
def test_residual_settings_that_cannot_work_are_refused(garment_config, overrides, message):
    with pytest.raises(VestisError, match=message):
        load_config(garment_config, overrides)


@pytest.mark.slow
def test_stage2_fine_tunes_a_residual_head_from_where_stage1_left_it(garment_config):
    """Stage 2 keeps a residual head's centre (the mean untuned feature) and its correction, so it
    starts as the stage-1 model; the anchor keeps pulling the correction, and it exports."""
    from vestis.train.command import embed_features

    stage1 = run(load_config(garment_config, ["head.residual=true", "head.dim=16", "head.anchor=1e-3",
                                              "train.epochs=2"]))
    common = ["kind=finetune", "train.epochs=1", "train.batch_size=16", "finetune.backbone_lr=1e-4",
              f"finetune.init={stage1['checkpoint']}", f"data.split_file={stage1['run_dir']}/split.csv",
              f"output={stage1['run_dir']}-stage2", "export.onnx=true"]
    with pytest.raises(VestisError, match="is a residual head of dim 16: set head.residual"):
        prepare(load_config(garment_config, [*common, "head.dim=16"]))
    cfg = load_config(garment_config, [*common, "head.residual=true", "head.dim=16", "head.anchor=1e-3"])
    task = prepare(cfg)
    first = load_checkpoint(stage1["checkpoint"])["model"]
    for k, v in first.items():
        torch.testing.assert_close(task.head.state_dict()[k], v)
    assert isinstance(task.regulariser, IdentityAnchor)
    # the stage-2 model on the images is the stage-1 model on the stored features of those images
    stage1_task = prepare(load_config(garment_config, ["head.residual=true", "head.dim=16",
                                                       f"data.split_file={stage1['run_dir']}/split.csv"]))
    stage1_task.head.load_state_dict(first)
    rows = np.arange(8)
    expected = embed_features(stage1_task.head, stage1_task.items.vectors[rows], torch.device("cpu"))
    task.model.eval()
    with torch.no_grad():
        images = torch.stack([task.inputs(rows, False)[i] for i in range(len(rows))])
        got = task.head.embed(task.model.backbone(images)[0]).numpy()
    assert (got * expected).sum(axis=1).min() > 0.999
    summary = run(cfg)
    assert summary["stage"] == 2 and summary["onnx"].endswith("model.onnx") and summary["test"]["mAP@10"] > 0

"""Each head kind trains on real garment-photo features and its loss falls; loss settings are
passed to pytorch-metric-learning in the units it expects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vestis.train.command import prepare
from vestis.train.config import HEAD_KINDS, HeadConfig, load_config
from vestis.train.heads import EmbeddingHead, HeadLoss
from vestis.train.batches import ClassesBySizeSampler
from vestis.train.trainer import Trainer


@pytest.mark.parametrize("overrides", [[f"head.kind={kind}"] for kind in HEAD_KINDS]
                         + [["head.kind=ce+triplet", "head.classifier=cosine", "head.margin=0.35",
                             "head.class_sampling=by-size"],
                            ["head.kind=ce+triplet", "head.classifier=subcenter-arcface",
                             "head.class_sampling=by-size"]])
def test_head_trains_and_loss_falls(overrides, garment_config):
    cfg = load_config(garment_config, overrides)
    task = prepare(cfg)
    result = Trainer(cfg, task, cfg.run_dir).fit()
    losses = [h["train_loss"] for h in result["history"]]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert result["val_mAP@10"] > 0.5  # nine clearly different groups: retrieval works after training
    assert (cfg.run_dir / "best.pt").exists() and (cfg.run_dir / "curves.png").stat().st_size > 1000


def test_arcface_margin_is_converted_to_degrees_for_pml():
    """0.5 rad is 28.65 deg; pml converts its degrees back to radians internally."""
    for kind in ("arcface", "subcenter-arcface"):
        loss = HeadLoss(HeadConfig(kind=kind, dim=16, scale=30, margin=0.5), num_classes=5)
        assert loss.margin_loss.margin == pytest.approx(0.5)
        assert loss.margin_loss.scale == 30
    cosface = HeadLoss(HeadConfig(kind="cosface", dim=16, scale=30), num_classes=5)
    assert cosface.margin_loss.margin == pytest.approx(0.35)


def test_cosine_classifier_is_the_normalised_softmax():
    """``classifier: cosine``: the logits are ``scale`` x the cosine to each class weight, so the
    loss ignores the embedding's length; the linear classifier's does not. ``margin`` makes it CosFace."""
    torch.manual_seed(0)
    embeddings, labels = torch.randn(12, 16), torch.arange(12) % 5
    cosine = HeadLoss(HeadConfig(kind="ce", dim=16, scale=20, classifier="cosine"), num_classes=5)
    weights = torch.nn.functional.normalize(cosine.classifier.W, dim=0)
    expected = torch.nn.functional.cross_entropy(20 * torch.nn.functional.normalize(embeddings) @ weights, labels)
    loss, parts = cosine(embeddings, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and parts == {"ce": pytest.approx(expected.item())}
    assert cosine(3 * embeddings, labels)[0].item() == pytest.approx(loss.item(), rel=1e-5)
    linear = HeadLoss(HeadConfig(kind="ce", dim=16), num_classes=5)
    assert linear(3 * embeddings, labels)[0].item() != pytest.approx(linear(embeddings, labels)[0].item(), rel=1e-3)
    # with head.margin m, m comes off the cosine to the item's own class before the scale (CosFace)
    margin = HeadLoss(HeadConfig(kind="ce", dim=16, scale=20, classifier="cosine", margin=0.3), num_classes=5)
    margin.classifier.W.data.copy_(cosine.classifier.W.data)
    own = torch.nn.functional.one_hot(labels, 5)
    expected = torch.nn.functional.cross_entropy(
        20 * (torch.nn.functional.normalize(embeddings) @ weights - 0.3 * own), labels)
    assert margin(embeddings, labels)[0].item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > loss.item()


def test_subcenter_arcface_classifier_takes_the_closest_sub_center_with_an_angular_margin():
    """``classifier: subcenter-arcface``: each class has ``sub_centers`` weights, the cosine to a
    class is the largest of its sub-centers', and the item's own class gets ArcFace's angular margin
    (``margin`` radians, default 0.5) before the scale."""
    torch.manual_seed(0)
    embeddings, labels = torch.randn(12, 16), torch.arange(12) % 5
    loss_fn = HeadLoss(HeadConfig(kind="ce+triplet", dim=16, scale=20, classifier="subcenter-arcface",
                                  sub_centers=3, triplet_weight=0.0), num_classes=5)
    weights = torch.nn.functional.normalize(loss_fn.classifier.W, dim=0)
    assert weights.shape == (16, 15)
    cosines = (torch.nn.functional.normalize(embeddings) @ weights).view(12, 5, 3).amax(dim=2)
    own = torch.nn.functional.one_hot(labels, 5).bool()
    with_margin = torch.where(own, torch.cos(torch.acos(cosines.clamp(-1, 1)) + 0.5), cosines)
    expected = torch.nn.functional.cross_entropy(20 * with_margin, labels)
    loss, parts = loss_fn(embeddings, labels)
    assert parts["ce"] == pytest.approx(expected.item(), rel=1e-4) and parts["triplet"] == 0.0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_embedding_head_is_bn_neck_with_unit_outputs():
    head = EmbeddingHead(40, 8).eval()
    x = torch.randn(5, 40)
    raw, unit = head(x), head.embed(x)
    assert isinstance(head.bn, torch.nn.BatchNorm1d) and raw.shape == (5, 8)
    np.testing.assert_allclose(unit.norm(dim=1).detach().numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit.detach().numpy(), torch.nn.functional.normalize(raw).detach().numpy(), atol=1e-6)


def test_triplet_kinds_sample_m_per_class(garment_config):
    cfg = load_config(garment_config, ["head.kind=ce+triplet", "head.m_per_class=4", "train.batch_size=24"])
    trainer = Trainer(cfg, prepare(cfg), cfg.run_dir)
    for _, labels in trainer.loader:
        counts = np.bincount(labels.numpy())
        assert set(counts[counts > 0]) == {4} and len(labels) == 24
    # by size: still whole groups of 4 (a class drawn twice holds 8), from the same training items
    cfg = load_config(garment_config, ["head.kind=ce+triplet", "head.m_per_class=4", "train.batch_size=24",
                                       "head.class_sampling=by-size"])
    trainer = Trainer(cfg, prepare(cfg), cfg.run_dir)
    assert isinstance(trainer.loader.sampler, ClassesBySizeSampler)
    for _, labels in trainer.loader:
        counts = np.bincount(labels.numpy())
        assert set(counts[counts > 0] % 4) == {0} and len(labels) == 24


def test_classes_by_size_follow_the_catalogue():
    """Uniform M-per-class batches show a class of 4 items as often as one of 80; by size, each
    class fills batches in proportion to its items, in groups of m items of one class."""
    labels = np.repeat([0, 1, 2, 3], [80, 15, 4, 1])
    torch.manual_seed(0)
    sampler = ClassesBySizeSampler(labels, m=4, batch_size=8, length=40_000)
    drawn = labels[np.fromiter(sampler, int)]
    assert len(drawn) == len(sampler) == 40_000
    np.testing.assert_allclose(np.bincount(drawn) / len(drawn), [0.80, 0.15, 0.04, 0.01], atol=0.01)
    groups = drawn.reshape(-1, 4)
    assert (groups == groups[:, :1]).all()
    torch.manual_seed(0)
    assert (labels[np.fromiter(sampler, int)] == drawn).all()  # torch's seed makes it repeatable

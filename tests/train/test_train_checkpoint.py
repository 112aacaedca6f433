"""Checkpoints: a saved model loads back with the same outputs, and a killed run resumes at the
right epoch and ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch

from vestis.errors import VestisError
from vestis.train.command import prepare
from vestis.train.config import load_config
from vestis.train.heads import EmbeddingHead, HeadLoss
from vestis.train.trainer import Trainer, load_checkpoint


def test_checkpoint_round_trip(garment_config):
    cfg = load_config(garment_config, ["train.epochs=2"])
    task = prepare(cfg)
    Trainer(cfg, task, cfg.run_dir).fit()
    ckpt = load_checkpoint(cfg.run_dir / "best.pt")
    assert ckpt["classes"] == task.classes and ckpt["config"]["head"]["kind"] == "arcface"
    assert {"model", "criterion", "optimizer", "scheduler", "epoch"} <= set(ckpt)
    head = EmbeddingHead(ckpt["in_dim"], ckpt["config"]["head"]["dim"])
    head.load_state_dict(ckpt["model"])
    criterion = HeadLoss(cfg.head, len(ckpt["classes"]))
    criterion.load_state_dict(ckpt["criterion"])
    x = torch.from_numpy(task.items.vectors[:10])
    task.head.eval(), head.eval()
    with torch.no_grad():
        torch.testing.assert_close(head.embed(x), task.head.embed(x), rtol=0, atol=0)
        labels = torch.arange(10) % len(task.classes)
        assert criterion(head(x), labels)[0] == task.criterion(task.head(x), labels)[0]


def test_resume_continues_at_the_right_epoch(garment_config, monkeypatch):
    cfg = load_config(garment_config, ["train.epochs=4"])
    full_task = prepare(cfg)
    full = Trainer(cfg, full_task, cfg.run_dir / "full").fit()

    # the same run, killed while validating epoch 3: last.pt holds epoch 2
    killed = Trainer(cfg, prepare(cfg), cfg.run_dir / "killed")
    validate = Trainer.validate

    def dies_at_epoch_3(self):
        if self.epoch == 3:
            raise KeyboardInterrupt
        return validate(self)

    monkeypatch.setattr(Trainer, "validate", dies_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    monkeypatch.setattr(Trainer, "validate", validate)
    assert load_checkpoint(cfg.run_dir / "killed" / "last.pt")["epoch"] == 2

    resumed_cfg = load_config(garment_config, ["train.epochs=4", f"train.resume={cfg.run_dir / 'killed' / 'last.pt'}"])
    task = prepare(resumed_cfg)
    resumed = Trainer(resumed_cfg, task, cfg.run_dir / "killed").fit()
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    assert resumed["epochs_run"] == 4
    for a, b in zip(resumed["history"], full["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for key, value in full_task.head.state_dict().items():
        torch.testing.assert_close(task.head.state_dict()[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change, key", [("head.kind=cosface", "head.kind"), ("head.residual=true", "head.residual")])
def test_resume_refuses_another_head(garment_config, change, key):
    cfg = load_config(garment_config, ["train.epochs=1"])
    Trainer(cfg, prepare(cfg), cfg.run_dir).fit()
    other = load_config(garment_config, [change, f"train.resume={cfg.run_dir / 'last.pt'}"])
    with pytest.raises(VestisError, match=key):
        Trainer(other, prepare(other), other.run_dir).fit()

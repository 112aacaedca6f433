"""Checkpoints: a saved model loads back with the same outputs, and a killed run resumes at the
right epoch and ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch

from vestis.errors import VestisError
from vestis.train.command import prepare
from vestis.train.config import load_config
from vestis.train.heads import EmbeddingHead, HeadLoss
from vestis.train.report import model_line
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


@pytest.mark.parametrize("average", ["train.average_from=0", "train.average_from=2"])
def test_resume_continues_at_the_right_epoch(garment_config, monkeypatch, average):
    cfg = load_config(garment_config, ["train.epochs=4", average])
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

    resumed_cfg = load_config(garment_config, ["train.epochs=4", average,
                                               f"train.resume={cfg.run_dir / 'killed' / 'last.pt'}"])
    task = prepare(resumed_cfg)
    resumed = Trainer(resumed_cfg, task, cfg.run_dir / "killed").fit()
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    assert resumed["epochs_run"] == 4
    for a, b in zip(resumed["history"], full["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["mAP@10"] == pytest.approx(b["mAP@10"], abs=1e-6)
    for key, value in full_task.head.state_dict().items():
        torch.testing.assert_close(task.head.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_weight_averaging_keeps_the_mean_of_the_epochs_weights(garment_config, monkeypatch):
    """From train.average_from on, the model validated and kept is the uniform average of the
    weights each epoch ended with; training goes on from the weights as trained."""
    cfg = load_config(garment_config, ["train.epochs=4", "train.average_from=2"])
    task = prepare(cfg)
    trainer = Trainer(cfg, task, cfg.run_dir)
    ended: list[dict[str, torch.Tensor]] = []  # the weights as trained at the end of each epoch
    swap = Trainer.swap_in_average

    def record(self):
        ended.append({k: v.clone() for k, v in self.task.model.state_dict().items()})
        return swap(self)

    monkeypatch.setattr(Trainer, "swap_in_average", record)
    result = trainer.fit()
    assert [h.get("averaged_epochs") for h in result["history"]] == [None, 1, 2, 3]
    last = load_checkpoint(cfg.run_dir / "last.pt")
    for key, value in last["model"].items():  # the trained weights, not the average
        torch.testing.assert_close(value, ended[3][key])
    weights = dict(task.model.named_parameters())  # averaged; buffers (BatchNorm statistics) are the last ones
    for key in weights:
        mean = sum(e[key] for e in ended[1:]) / 3
        torch.testing.assert_close(last["average"][f"module.{key}"], mean)
        assert not torch.allclose(mean, ended[3][key])  # the weights moved, so the average is not the last
    best = load_checkpoint(cfg.run_dir / "best.pt")
    epoch = result["best_epoch"]
    assert epoch >= 2  # an averaged model was kept
    kept = {k: sum(e[k] for e in ended[1:epoch]) / (epoch - 1) if k in weights else ended[epoch - 1][k] for k in ended[0]}
    for key, value in best["model"].items():
        torch.testing.assert_close(value, kept[key])
        torch.testing.assert_close(task.model.state_dict()[key], kept[key])  # the model left in the task
    assert model_line(result).endswith(f"the average of the weights at the end of epochs 2 to {epoch}.")


@pytest.mark.parametrize("first, change, key", [
    ([], ["head.kind=cosface"], "head.kind"), ([], ["head.residual=true"], "head.residual"),
    ([], ["train.average_from=1"], "train.average_from"),
    (["head.kind=ce"], ["head.kind=ce", "head.classifier=cosine"], "head.classifier"),
    (["head.kind=ce", "head.classifier=subcenter-arcface"],
     ["head.kind=ce", "head.classifier=subcenter-arcface", "head.sub_centers=2"], "head.sub_centers")])
def test_resume_refuses_another_head(garment_config, first, change, key):
    cfg = load_config(garment_config, ["train.epochs=1", *first])
    Trainer(cfg, prepare(cfg), cfg.run_dir).fit()
    other = load_config(garment_config, [*change, f"train.resume={cfg.run_dir / 'last.pt'}"])
    with pytest.raises(VestisError, match=key):
        Trainer(other, prepare(other), other.run_dir).fit()

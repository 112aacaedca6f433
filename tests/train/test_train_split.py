"""The test split never leaks into training or model selection."""

from __future__ import annotations

import numpy as np
import pytest

from vestis.errors import VestisError
from vestis.eval.protocols import load_split, save_split
from vestis.train.command import prepare
from vestis.train.config import load_config
from vestis.train.trainer import Trainer


def test_training_and_validation_never_touch_test_items(garment_config):
    cfg = load_config(garment_config, ["train.epochs=2"])
    task = prepare(cfg)
    split = load_split(cfg.run_dir / "split.csv")  # created beside the run
    test_ids = {i for i, s in split.items() if s == "test"}
    assert test_ids and len(split) == len(task.items)
    trainer = Trainer(cfg, task, cfg.run_dir)
    trained_ids = {task.items.ids[r] for r in task.rows("train")}
    assert trained_ids.isdisjoint(test_ids)
    assert {task.items.ids[r] for r in trainer.eval_rows}.isdisjoint(test_ids)
    # poison the test features: any use of them in training or validation gives NaN or an error
    task.items.vectors[task.rows("test")] = np.nan
    result = trainer.fit()
    assert all(np.isfinite([h["train_loss"], h["val_loss"], h["mAP@10"]]).all() for h in result["history"])


@pytest.mark.parametrize("override", ["train.val_split=test", "train.train_splits=[train,test]",
                                      "train.train_splits=[train,val]"])
def test_config_using_test_or_val_for_the_wrong_job_is_refused(garment_config, override):
    with pytest.raises(VestisError, match="split"):
        load_config(garment_config, [override])


def test_trainer_refuses_val_split_test_even_without_validation(garment_config):
    cfg = load_config(garment_config)
    task = prepare(cfg)
    cfg.train.val_split = "test"
    with pytest.raises(VestisError, match="held out"):
        Trainer(cfg, task, cfg.run_dir)


def test_split_file_is_reused_and_must_cover_the_items(garment_config, tmp_path):
    cfg = load_config(garment_config)
    first = prepare(cfg).split
    assert list(prepare(cfg).split) == list(first)
    split = load_split(cfg.run_dir / "split.csv")
    save_split(tmp_path / "partial.csv", dict(list(split.items())[:10]))
    with pytest.raises(VestisError, match="no split for"):
        prepare(load_config(garment_config, [f"data.split_file={tmp_path / 'partial.csv'}"]))

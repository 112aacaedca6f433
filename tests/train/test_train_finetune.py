"""Stage 2: augmentation keeps colour labels true, and the backbone is fine-tuned end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from vestis.errors import VestisError
from vestis.train.config import FinetuneConfig, load_config
from vestis.train.finetune import Augment, colour_is_target, studio_backdrop


def _garment_hue(image: Image.Image) -> float:
    """Mean hue (0-255) of the saturated pixels."""
    hsv = np.asarray(image.convert("HSV")).reshape(-1, 3).astype(float)
    return float(hsv[hsv[:, 1] > 100, 0].mean())


def test_colour_jitter_is_disabled_when_colour_is_a_target(make_garment):
    assert colour_is_target(["articleType", "baseColour"]) and not colour_is_target(["articleType"])
    strong = FinetuneConfig(saturation=0.5, hue=0.3)
    keeps = Augment.from_config(strong, ["articleType", "baseColour"])
    changes = Augment.from_config(strong, ["articleType"])
    assert (keeps.saturation, keeps.hue) == (0.0, 0.0) and (changes.saturation, changes.hue) == (0.5, 0.3)
    image = make_garment((30, 160, 60), "shirt")
    base = _garment_hue(image)
    kept = [_garment_hue(keeps(image, np.random.default_rng(i))) for i in range(10)]
    moved = [_garment_hue(changes(image, np.random.default_rng(i))) for i in range(10)]
    assert max(abs(h - base) for h in kept) < 3
    assert max(abs(h - base) for h in moved) > 15


def test_augment_flips_crops_and_is_repeatable(make_garment):
    image = make_garment((200, 30, 30), "trousers")
    aug = Augment(flip=True, crop_scale=(0.5, 0.8), brightness=0.2, contrast=0.2, saturation=0, hue=0)
    outs = [aug(image, np.random.default_rng(i)) for i in range(8)]
    assert all(o.size[0] * o.size[1] <= 0.81 * image.size[0] * image.size[1] for o in outs)
    assert len({o.size for o in outs}) > 1
    assert np.array_equal(np.asarray(aug(image, np.random.default_rng(3))), np.asarray(outs[3]))


def test_the_studio_backdrop_is_the_white_joined_to_the_border_not_a_white_garment(make_garment):
    image = make_garment((200, 30, 30), "shirt")
    garment = np.asarray(image).min(axis=2) < 200
    mask = studio_backdrop(image)
    assert not (mask & garment).any() and (mask | garment).mean() > 0.99
    # a white shirt drawn with a dark outline: its inside is no backdrop
    white = Image.new("RGB", (120, 160), (245, 245, 245))
    ImageDraw.Draw(white).rectangle([30, 30, 90, 130], fill=(252, 252, 252), outline=(40, 40, 40), width=2)
    mask = studio_backdrop(white)
    assert not mask[35:125, 35:85].any() and mask[:25].all() and mask[:, :25].all()


def test_background_and_blur_imitate_photos_outside_the_studio(make_garment, garment_config):
    image = make_garment((30, 160, 60), "dress")
    backdrop = studio_backdrop(image)
    plain = dict(flip=False, crop_scale=(1.0, 1.0), brightness=0, contrast=0, saturation=0, hue=0)
    swapped = [np.asarray(Augment(**plain, background=1.0)(image, np.random.default_rng(i))) for i in range(6)]
    for out in swapped:  # the backdrop is a colour field now, the garment untouched
        np.testing.assert_array_equal(out[~backdrop], np.asarray(image)[~backdrop])
        assert (out[backdrop].min(axis=1) < 230).mean() > 0.5
    assert len({tuple(out[0, 0]) for out in swapped}) > 1  # a different backdrop each draw
    np.testing.assert_array_equal(np.asarray(Augment(**plain, background=0.0)(image, np.random.default_rng(0))),
                                  np.asarray(image))

    def sharpness(im: Image.Image) -> float:
        return float(np.asarray(im.convert("L").filter(ImageFilter.FIND_EDGES), float).mean())

    blurred = [Augment(**plain, blur=3.0)(image, np.random.default_rng(i)) for i in range(6)]
    # each draw takes a radius in [0, 3]: most images lose about half their edge strength
    assert np.median([sharpness(b) for b in blurred]) < 0.6 * sharpness(image)
    assert np.array_equal(np.asarray(Augment(**plain, blur=3.0)(image, np.random.default_rng(2))),
                          np.asarray(blurred[2]))
    for override in ("finetune.background=1.5", "finetune.blur=-1"):
        with pytest.raises(VestisError, match="finetune.background is a probability"):
            load_config(garment_config, ["kind=finetune", override])


@pytest.mark.slow
def test_stage2_finetunes_backbone_from_stage1_head(garment_config):
    """One stage-2 epoch on the garment photos starts from the stage-1 head and changes the backbone."""
    from vestis.train.command import prepare, run

    stage1 = run(load_config(garment_config, ["train.epochs=2"]))
    cfg = load_config(garment_config, [
        "kind=finetune", "train.epochs=1", "train.batch_size=16", "train.lr=1e-3", "finetune.backbone_lr=1e-4",
        f"finetune.init={stage1['checkpoint']}", f"data.split_file={stage1['run_dir']}/split.csv",
        f"output={stage1['run_dir']}-stage2", "export.onnx=true"])
    task = prepare(cfg)
    head_before = {k: v.clone() for k, v in task.head.state_dict().items()}
    backbone_before = {k: v.clone() for k, v in task.model.backbone.state_dict().items()}
    for k, v in torch.load(stage1["checkpoint"], weights_only=True)["model"].items():
        torch.testing.assert_close(head_before[k], v)
    summary = run(cfg)
    assert summary["stage"] == 2 and summary["epochs_run"] == 1 and np.isfinite(summary["history"][0]["train_loss"])
    from vestis.train.trainer import load_checkpoint

    trained = load_checkpoint(summary["checkpoint"])["model"]
    changed = [k for k, v in backbone_before.items() if v.is_floating_point()
               and not torch.equal(trained[f"backbone.{k}"], v)]
    assert changed and all("running" not in k for k in changed)  # weights train, BN statistics stay frozen
    assert summary["onnx"].endswith("model.onnx") and summary["test"]["mAP@10"] > 0
    # in domain beside the collection's stored (untrained backbone) vectors, as in stage 1
    from vestis.train.command import evaluate

    assert summary["test_baseline"] == evaluate(task, cfg, task.items.vectors)[0]
    low, high = summary["test_mAP@10_change_ci95"]
    assert low <= summary["test"]["mAP@10"] / summary["test_baseline"]["mAP@10"] - 1 <= high

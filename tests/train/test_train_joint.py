"""The joint text-image space: config, contrastive loss, training, export and the runtime model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from tests.train.conftest import COLOURS, SHAPES, TRAINING_CONFIGS
from vestis.data.captions import item_texts
from vestis.errors import VestisError
from vestis.train.config import JointRunConfig, load_config
from vestis.train.command import train_from_config
from vestis.train.joint import ClipLoss


def _config(tmp_path, collection, **text):
    cfg = {"name": "garments-text", "kind": "joint", "output": str(tmp_path / "run"),
           "data": {"collection": str(collection), "labels": ["articleType", "baseColour"]},
           "text": {"templates": ["{baseColour} {articleType}"], **text},
           "head": {"dim": 32},
           "train": {"epochs": 40, "batch_size": 32, "lr": 0.01, "patience": 0, "progress": False}}
    path = tmp_path / "text.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_captions_from_a_title_and_templates():
    meta = {"title": "Turtle Check Men Navy Blue Shirt", "gender": "Men", "baseColour": "Navy Blue",
            "articleType": "Shirts"}
    assert item_texts(meta, "title", ["{gender} {baseColour} {articleType}", "{baseColour} {usage}"]) == [
        "Turtle Check Men Navy Blue Shirt", "Men Navy Blue Shirts"]  # no usage: no caption with a hole
    assert item_texts({"title": "  "}, "title", []) == []
    with pytest.raises(VestisError, match="malformed"):
        item_texts(meta, None, ["{gender"])


def test_config_is_parsed_by_its_kind_and_validated(tmp_path, garment_config):
    path = _config(tmp_path, tmp_path / "c")
    cfg = load_config(path, ["head.dim=16"])
    assert isinstance(cfg, JointRunConfig) and cfg.kind == "joint"
    with pytest.raises(VestisError, match="unknown config key text"):  # a text section belongs to kind: joint
        load_config(path, ["kind=embedding"])
    assert cfg.head.dim == 16 and cfg.text.encoder == "all-minilm-l6-v2-int8"
    with pytest.raises(VestisError, match="column"):
        load_config(path, ["text.templates=[]"])
    with pytest.raises(VestisError, match="malformed"):
        load_config(path, ["text.templates=['{colour']"])
    with pytest.raises(VestisError, match="unknown config key text.colum"):
        load_config(path, ["text.colum=title"])
    with pytest.raises(VestisError, match="set head.residual=true"):
        load_config(path, ["head.anchor=0.01"])
    with pytest.raises(VestisError, match="not to the joint space"):
        load_config(path, ["head.residual=true", "head.interpolate=0.5"])
    with pytest.raises(VestisError, match="--find-lr is not available"):
        train_from_config(path, find_lr=True)
    assert load_config(path, ["head.residual=true", "head.anchor=0.01"]).head.anchor == 0.01


def test_shipped_joint_configs_are_valid():
    shipped = {path.stem: cfg for path in TRAINING_CONFIGS if (cfg := load_config(path)).kind == "joint"}
    assert set(shipped) == {"fashion-product-text", "clothing-attributes-text"}
    assert shipped["fashion-product-text"].head.residual and shipped["fashion-product-text"].head.anchor > 0


def test_clip_loss_prefers_aligned_pairs_and_treats_shared_texts_as_positives():
    torch.manual_seed(0)
    item = np.arange(6)
    text = np.array([0, 0, 1, 2, 3, 4])  # pairs 0 and 1 share their caption
    loss = ClipLoss(item, text, temperature=0.1)
    img = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    labels = torch.arange(6)
    aligned = loss(torch.cat([img, img], 1), labels)[0]
    shuffled = loss(torch.cat([img, img[torch.tensor([3, 4, 5, 0, 1, 2])]], 1), labels)[0]
    assert aligned < shuffled
    # a batch where the two images of caption 0 are swapped costs exactly as much: both are positives
    swapped = loss(torch.cat([img, img[torch.tensor([1, 0, 2, 3, 4, 5])]], 1), labels)[0]
    assert torch.isclose(aligned, swapped)


@pytest.fixture(scope="module")
def trained(garment_collection, tmp_path_factory):
    from vestis.train import train_from_config

    tmp = tmp_path_factory.mktemp("joint")
    summary = train_from_config(_config(tmp, garment_collection))
    return summary, tmp / "run"


@pytest.mark.slow
def test_training_writes_the_run_and_text_finds_the_right_images(trained, garment_collection):
    from vestis.encoders.joint import JointModel

    summary, run = trained
    for name in ("config.yaml", "split.csv", "best.pt", "last.pt", "curves.png", "metrics.json",
                 "image_head.onnx", "text_head.onnx", "joint.json"):
        assert (run / name).is_file(), name
    assert summary["pairs"] == len(SHAPES) * len(COLOURS) * 6 and summary["texts"] == 9
    meta = json.loads((run / "joint.json").read_text())
    assert max(meta["onnx_max_abs_diff"].values()) < 1e-4
    model = JointModel(run)
    items, vectors = _items_and_vectors(garment_collection)
    joint = model.embed_image_features(vectors)
    assert joint.shape == (len(items), 32)
    assert _caption_precision(model, items, joint) >= 0.8
    assert model.version.startswith("garments-text/1/sha256:")


def _items_and_vectors(collection):
    from vestis.store.collection import Collection

    with Collection.open(collection) as coll:
        items = list(coll.iter_items())
        table = coll.table()
        return items, table.view[1][table.rows_of(np.array([it.vid for it in items], np.int64))]


def _caption_precision(model, items, joint) -> float:
    """Mean precision@6 of every "colour shape" caption over the images (6 per pair)."""
    precisions = []
    for shape in SHAPES:
        for colour in COLOURS:
            scores = joint @ model.embed_text(f"{colour} {shape}")[0]
            top = [items[i].metadata for i in np.argsort(-scores)[:6]]
            precisions.append(np.mean([m == {"articleType": shape, "baseColour": colour} for m in top]))
    return float(np.mean(precisions))


@pytest.mark.slow
def test_a_residual_image_side_keeps_the_backbone_vector_and_learns_the_captions(garment_collection, tmp_path):
    """``head.residual``: the image side is the centred backbone vector plus an anchored
    correction of rank ``head.dim``, so the joint space has the backbone's size and stays near
    it, and the text side still finds the right images."""
    from vestis.encoders.joint import JointModel
    from vestis.train import train_from_config

    summary = train_from_config(_config(tmp_path, garment_collection), ["head.residual=true", "head.dim=8",
                                                                        "head.anchor=1e-3"])
    model = JointModel(tmp_path / "run")
    items, vectors = _items_and_vectors(garment_collection)
    joint = model.embed_image_features(vectors)
    assert joint.shape == vectors.shape and json.loads((tmp_path / "run" / "joint.json").read_text())["dim"] == 1280
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=False)["model"]
    centre = ckpt["image.centre"].numpy()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    start = (unit - centre) / np.linalg.norm(unit - centre, axis=1, keepdims=True)
    kept = np.sum(joint * start, axis=1)  # cosine between each image's joint vector and its start
    assert 0.9 < kept.min() and kept.max() < 0.9999, (kept.min(), kept.max())  # moved, and not far
    assert _caption_precision(model, items, joint) >= 0.8
    assert summary["best_epoch"] >= 1


@pytest.mark.slow
def test_joint_model_errors_are_clear(trained, tmp_path):
    from vestis.encoders.joint import JointModel

    with pytest.raises(VestisError, match="no joint text-image model"):
        JointModel(tmp_path)
    (tmp_path / "joint.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(VestisError, match="not a joint"):
        JointModel(tmp_path)


@pytest.mark.slow
def test_a_joint_run_scores_its_image_side_on_the_transfer_sets(garment_collection, transfer_collection, tmp_path):
    """As for the image heads: the joint space's image vectors of another collection, leave-one-out
    by its label, beside the backbone's; figures equal to the exported head's."""
    from vestis.encoders.joint import JointModel
    from vestis.eval.protocols import leave_one_out
    from vestis.train import train_from_config
    from vestis.train.config import DataConfig
    from vestis.train.features import load_items

    config = _config(tmp_path, garment_collection)
    raw = yaml.safe_load(config.read_text())
    raw["train"]["epochs"] = 5
    raw["transfer"] = [{"collection": str(transfer_collection), "label": "category", "name": "other-garments"},
                       {"collection": str(tmp_path / "absent"), "label": "x", "name": "absent"}]
    config.write_text(yaml.safe_dump(raw))
    summary = train_from_config(config)
    result = summary["transfer"]["other-garments"]
    items = load_items(DataConfig(collection=str(transfer_collection)), tmp_path)
    labels = items.groups(["category"])
    joint = JointModel(tmp_path / "run").embed_image_features(items.vectors)
    for scores, vectors in ((result["model"], joint), (result["backbone"], items.vectors)):
        expected = leave_one_out(vectors, labels, (1, 10))
        assert scores["n_queries"] == 27
        for metric in ("mAP@10", "P@10", "R@1"):
            assert scores[metric] == pytest.approx(expected[metric], abs=1e-6)
    assert result["worse"] == (result["model"]["mAP@10"] < result["backbone"]["mAP@10"])
    assert "absent" in summary["transfer_skipped"][0]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["transfer"]["other-garments"] == result

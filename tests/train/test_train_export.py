"""ONNX export: outputs match PyTorch within 1e-4, and the exported model loads as an encoder
with the preprocessing it was trained with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vestis.train.command import prepare, run
from vestis.train.config import load_config


@pytest.mark.slow
def test_full_export_is_a_working_encoder(garment_config, make_garment):
    """Backbone + head in one ONNX model: get_encoder loads it with the sidecar's preprocessing,
    and its embedding of a photo equals the head applied to the collection's stored features."""
    from vestis.encoders import BUILTIN_PREPROCESSING, get_encoder

    spec = BUILTIN_PREPROCESSING["efficientnet-lite0"]
    cfg = load_config(garment_config, ["train.epochs=2", "export.onnx=true", "export.version=7"])
    summary = run(cfg)
    onnx_path = cfg.run_dir / "model.onnx"
    assert summary["onnx"] == str(onnx_path)
    sidecar = json.loads(onnx_path.with_suffix(".json").read_text())
    assert (sidecar["input_size"], sidecar["resize"], tuple(sidecar["mean"])) == (spec.size, spec.resize, spec.mean)
    assert sidecar["onnx_max_abs_diff"] <= 1e-4
    encoder = get_encoder(str(onnx_path))
    assert encoder.name == "garments" and encoder.dim == 32 and f"garments/7/{spec.tag}/" in encoder.version

    task = prepare(cfg)
    from vestis.train.trainer import load_checkpoint

    task.head.load_state_dict(load_checkpoint(cfg.run_dir / "best.pt")["model"])
    image = make_garment((200, 30, 30), "shirt", seed=3)
    builtin = get_encoder("efficientnet-lite0")
    with torch.no_grad():
        expected = task.head.eval().embed(torch.from_numpy(builtin.embed_images([image]))).numpy()
    np.testing.assert_allclose(encoder.embed_images([image]), expected, atol=1e-4)
    assert encoder.feature_maps(np.stack([encoder.preprocess(image)])).shape == (1, 1280, 7, 7)


def test_exported_model_indexes_and_searches_through_the_cli(garment_config, garment_collection, tmp_path):
    """`vestis index --encoder model.onnx` then `vestis search`: the collection records the trained
    encoder, and a query photo finds itself first and its own group (shape + colour) next."""
    from typer.testing import CliRunner

    from vestis.cli import app

    cfg = load_config(garment_config, ["train.epochs=3", "export.onnx=true"])
    run(cfg)
    onnx_path = cfg.run_dir / "model.onnx"
    images = garment_collection.parent / "images"
    runner = CliRunner()
    res = runner.invoke(app, ["index", str(images), "-c", str(tmp_path / "trained"), "--encoder", str(onnx_path),
                              "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 54
    info = json.loads(runner.invoke(app, ["info", "-c", str(tmp_path / "trained"), "--json"]).stdout)
    assert info["encoder"] == "garments" and info["dim"] == 32 and info["encoder_source"] == str(onnx_path.resolve())

    query = images / "dress-blue-2.png"
    res = runner.invoke(app, ["search", str(query), "-c", str(tmp_path / "trained"), "-k", "6", "--json"])
    assert res.exit_code == 0, res.output
    ids = [r["id"] for r in json.loads(res.stdout)["results"]]
    assert ids[0].endswith("dress-blue-2")
    assert sum("dress-blue" in i for i in ids) >= 5, ids

    onnx_path.rename(onnx_path.with_name("moved.onnx"))  # the collection cannot find its model any more
    res = runner.invoke(app, ["search", str(query), "-c", str(tmp_path / "trained"), "--json"])
    assert res.exit_code != 0 and "cannot open the encoder of collection" in str(res.exception)
    assert str(onnx_path.resolve()) in str(res.exception)


@pytest.mark.slow
def test_a_head_trained_on_int8_features_exports_on_the_float_network(garment_collection, tmp_path):
    """Collections default to the 8-bit encoder, which has no torch twin: a stage-1 head trained on
    its features exports on the float32 network, and the model embeds like head(int8 features)."""
    import yaml
    from PIL import Image

    from vestis.encoders import get_encoder
    from vestis.store.collection import Collection, NewItem
    from vestis.train.trainer import load_checkpoint

    int8 = get_encoder("efficientnet-lite0-int8")
    paths = sorted((garment_collection.parent / "images").glob("*.png"))
    images = [Image.open(p).convert("RGB") for p in paths]
    with Collection.open(garment_collection) as source:
        labels = {it.id: it.metadata for it in source.iter_items()}
    collection = tmp_path / "int8-collection"
    with Collection.create(collection, encoder_name=int8.name, encoder_version=int8.version,
                           dim=int8.dim, colour_dim=0) as coll:
        coll.upsert([NewItem(p.stem, str(p), p.stem, v, None, labels[p.stem])
                     for p, v in zip(paths, int8.embed_images(images))])
    config = tmp_path / "int8.yaml"
    config.write_text(yaml.safe_dump({
        "name": "garments-int8", "kind": "embedding", "output": str(tmp_path / "run"),
        "data": {"collection": str(collection), "labels": ["articleType", "baseColour"]},
        "head": {"kind": "arcface", "dim": 32},
        "train": {"epochs": 2, "batch_size": 24, "lr": 0.01, "patience": 0, "progress": False},
        "export": {"onnx": True}}))
    cfg = load_config(config, [])
    run(cfg)
    encoder = get_encoder(str(cfg.run_dir / "model.onnx"))
    task = prepare(cfg)
    task.head.load_state_dict(load_checkpoint(cfg.run_dir / "best.pt")["model"])
    with torch.no_grad():
        expected = task.head.eval().embed(torch.from_numpy(int8.embed_images(images[:6]))).numpy()
    got = encoder.embed_images(images[:6])
    assert np.all(np.sum(got * expected, axis=1) > 0.95)  # unit vectors: cosine of float vs 8-bit path

"""An ONNX model given by path: input size from the model, preprocessing from the sidecar JSON."""

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from vestis.encoders import OnnxFileEncoder, get_encoder
from vestis.errors import VestisError


class Tiny(nn.Module):
    """A small conv net with the vestis outputs: embedding (unnormalised here) and feature_map."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)

    def forward(self, x):
        fmap = torch.relu(self.conv(x))
        return fmap.mean(dim=(2, 3)) * 3.0, fmap


class Flattened(Tiny):
    def forward(self, x):
        fmap = torch.relu(self.conv(x))
        return fmap.reshape(x.shape[0], -1), fmap


class MapsOnly(Tiny):
    def forward(self, x):
        return torch.relu(self.conv(x))


def export(path, *, size=64, dynamic=False, seed=0, model=Tiny, outputs=("embedding", "feature_map")):
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {0: "batch", 2: "h", 3: "w"} if dynamic else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(model(seed), (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                          input_names=["pixels"], output_names=list(outputs),
                          dynamic_axes={"pixels": axes, **{o: {0: "batch"} for o in outputs}})
    return path


def test_sidecar_sets_preprocessing_and_version(tmp_path, make_garment):
    model = export(tmp_path / "shop.onnx")
    (tmp_path / "shop.json").write_text(json.dumps({
        "name": "shop-arcface", "version": "3", "input_size": 64, "resize": "crop",
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}))
    enc = get_encoder(str(model))
    assert isinstance(enc, OnnxFileEncoder)
    assert (enc.name, enc.dim, enc.input_size) == ("shop-arcface", 8, (64, 64))
    assert enc.version.startswith("shop-arcface/3/norm-") and "/crop64/sha256:" in enc.version
    image = make_garment((200, 30, 30))
    x = enc.preprocess(image)
    assert x.shape == (3, 64, 64) and x.min() >= -1 and x.max() <= 1  # (x - 0.5) / 0.5
    vectors = enc.embed_images([image, make_garment((30, 30, 200), "dress")])
    with torch.no_grad():
        expected = Tiny()(torch.from_numpy(x[None]))[0].numpy()[0]
    assert np.allclose(vectors[0], expected / np.linalg.norm(expected), atol=1e-5)  # normalised for us
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert enc.feature_maps(x[None]).shape == (1, 8, 16, 16)
    with pytest.raises(VestisError, match="feature_map_14"):
        enc.feature_maps(x[None], "14x14")


def test_defaults_without_sidecar_and_dynamic_shapes(tmp_path):
    # a flattened map: the embedding's size depends on the input size, found by a test run at 224 px
    enc = OnnxFileEncoder(export(tmp_path / "plain.onnx", size=32, dynamic=True, model=Flattened))
    assert (enc.name, enc.input_size, enc.dim) == ("plain", (224, 224), 8 * 56 * 56)
    assert enc.version.startswith("plain/imagenet/crop224/sha256:")
    assert enc.embed_batch(np.zeros((0, 3, 224, 224), np.float32)).shape == (0, enc.dim)


def test_version_changes_with_the_weights(tmp_path):
    a = OnnxFileEncoder(export(tmp_path / "a" / "m.onnx", seed=0))
    b = OnnxFileEncoder(export(tmp_path / "b" / "m.onnx", seed=1))
    assert a.name == b.name and a.version != b.version


def test_bad_sidecars_and_models_are_clear_errors(tmp_path):
    model = export(tmp_path / "m.onnx", size=64)
    sidecar = tmp_path / "m.json"
    sidecar.write_text(json.dumps({"input_size": 128}))
    with pytest.raises(VestisError, match="input_size 128"):
        OnnxFileEncoder(model)
    sidecar.write_text("{not json")
    with pytest.raises(VestisError, match="sidecar"):
        OnnxFileEncoder(model)
    sidecar.write_text("[64]")
    with pytest.raises(VestisError, match="JSON object"):
        OnnxFileEncoder(model)
    sidecar.write_text(json.dumps({"resize": "squash"}))
    with pytest.raises(VestisError, match="resize mode"):
        OnnxFileEncoder(model)
    sidecar.unlink()
    no_embedding = export(tmp_path / "maps.onnx", model=MapsOnly, outputs=("feature_map",))
    with pytest.raises(VestisError, match="embedding"):
        OnnxFileEncoder(no_embedding)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(VestisError, match="cannot load"):
        OnnxFileEncoder(garbage)

"""Built-in encoders: registry, errors, ONNX export cache, output contract, ONNX == PyTorch."""

import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from vestis.encoders import DEFAULT_ENCODER, PreprocessSpec, default_encoder, get_encoder, list_encoders
from vestis.encoders.onnx_encoder import builtin_model_path
from vestis.errors import VestisError

MID_CHANNELS = {"efficientnet-lite0": 112, "mobilenetv2": 96}
VERSIONS = {"efficientnet-lite0": "efficientnet-lite0/tf/crop224/v1", "mobilenetv2": "mobilenetv2/imagenet/crop224/v1"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "encoder-cache"


@pytest.fixture(scope="module")
def encoders(cache_dir):
    return {name: get_encoder(name, cache_dir=cache_dir) for name in VERSIONS}  # the float32 backbones


def test_registry_names():
    from vestis.encoders.torch_models import BUILDERS

    assert sorted(VERSIONS) == sorted(BUILDERS)
    assert list_encoders() == ["efficientnet-lite0", "efficientnet-lite0-int8", "efficientnet-lite0-int8-vnni",
                               "mobilenetv2"]
    assert DEFAULT_ENCODER == default_encoder()  # chosen from this CPU (see test_encoder_int8_vnni.py)


def test_unknown_names_and_missing_files_are_clear_errors(tmp_path):
    names = "efficientnet-lite0, efficientnet-lite0-int8, efficientnet-lite0-int8-vnni, mobilenetv2"
    with pytest.raises(VestisError, match=names):
        get_encoder("resnet50", cache_dir=tmp_path)
    with pytest.raises(VestisError, match="does not exist"):
        get_encoder(str(tmp_path / "missing.onnx"))
    assert not list(tmp_path.iterdir())  # nothing exported for a bad name


@pytest.mark.slow
def test_export_is_cached_atomically(encoders, cache_dir, make_garment):
    # The cache is shared with other modules of the session (which may add the 8-bit model).
    files = sorted(f for f in cache_dir.iterdir() if f.is_file())
    assert {f.suffix for f in files} == {".onnx"}  # no temporary left over
    assert {builtin_model_path(name, cache_dir) for name in VERSIONS} <= set(files)  # one per backbone
    optimized = sorted((cache_dir / "optimized").iterdir())  # each one's graph as optimised for this CPU
    assert {f.name.split("-")[0] for f in optimized} == {"efficientnet", "mobilenetv2"}
    stamps = {f: f.stat().st_mtime_ns for f in files + optimized}
    assert builtin_model_path("mobilenetv2", cache_dir) in stamps
    padded = get_encoder("mobilenetv2", cache_dir=cache_dir, preprocess=PreprocessSpec(resize="pad"))
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps  # reused, not re-exported or re-optimised
    assert len(list(cache_dir.rglob("*"))) == len(stamps) + 1  # + the optimized/ folder
    assert padded.version == "mobilenetv2/imagenet/pad224/v1" != encoders["mobilenetv2"].version
    reopened = get_encoder("efficientnet-lite0", cache_dir=cache_dir)  # from the saved optimised graph
    images = [make_garment((200, 30, 30), "shirt"), make_garment((20, 40, 120), "dress")]
    assert np.allclose(reopened.embed_images(images), encoders["efficientnet-lite0"].embed_images(images), atol=1e-6)


def test_cache_dir_follows_vestis_cache_dir(monkeypatch, tmp_path):
    from vestis.encoders.onnx_encoder import default_cache_dir

    monkeypatch.setenv("VESTIS_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "encoders"
    monkeypatch.delenv("VESTIS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "vestis" / "encoders"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet-lite0", "mobilenetv2"])
def test_output_contract(encoders, name, make_garment):
    enc = encoders[name]
    assert (enc.name, enc.dim, enc.input_size) == (name, 1280, (224, 224))
    assert enc.version == VERSIONS[name]
    images = [make_garment((200, 30, 30), "shirt"), make_garment((20, 40, 120), "trousers", size=(60, 80))]
    vectors = enc.embed_images(images)
    assert vectors.shape == (2, 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert enc.embed_images([]).shape == (0, 1280)
    batch = np.stack([enc.preprocess(im) for im in images])
    assert enc.feature_maps(batch).shape == (2, 1280, 7, 7)
    assert enc.feature_maps(batch, "14x14").shape == (2, MID_CHANNELS[name], 14, 14)
    # the embedding is the normalised mean of the 7x7 map
    pooled = enc.feature_maps(batch).mean(axis=(2, 3))
    assert np.allclose(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), vectors, atol=1e-5)
    with pytest.raises(VestisError, match="14x14"):
        enc.feature_maps(batch, "28x28")
    with pytest.raises(VestisError, match="224"):
        enc.embed_batch(np.zeros((1, 3, 100, 100), np.float32))


@pytest.mark.slow
def test_large_batches_are_chunked_consistently(encoders, make_garment):
    enc = encoders["efficientnet-lite0"]
    images = [make_garment((40 * i % 255, 90, 160), "dress", seed=i) for i in range(19)]
    together = enc.embed_images(images)
    alone = np.concatenate([enc.embed_images([im]) for im in images])
    assert np.allclose(together, alone, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet-lite0", "mobilenetv2"])
def test_onnx_matches_pytorch(encoders, name, make_garment):
    import torch

    from vestis.encoders.torch_models import BUILDERS

    enc = encoders[name]
    batch = np.stack([enc.preprocess(make_garment(c, s, seed=i)) for i, (c, s) in
                      enumerate([((200, 30, 30), "shirt"), ((30, 30, 30), "dress"), ((240, 200, 60), "trousers")])])
    with torch.no_grad():
        embedding, map7, map14 = (t.numpy() for t in BUILDERS[name]()(torch.from_numpy(batch)))
    assert np.abs(enc.embed_batch(batch) - embedding).max() < 1e-4
    # the maps are unbounded (the 14x14 one reaches ~20): 1e-4 relative to their scale
    for which, expected in [("7x7", map7), ("14x14", map14)]:
        assert np.abs(enc.feature_maps(batch, which) - expected).max() < 1e-4 * np.abs(expected).max()


def shifted_copy(image: Image.Image) -> Image.Image:
    """The same photo, re-framed: a few pixels cut off two sides, then scaled down by 10%."""
    w, h = image.size
    cropped = image.crop((6, 0, w, h - 8))
    return cropped.resize((int(cropped.width * 0.9), int(cropped.height * 0.9)), Image.Resampling.BICUBIC)


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("name", ["efficientnet-lite0", "mobilenetv2"])
def test_real_image_is_closest_to_its_reframed_copy(encoders, name, fpi300):
    with zipfile.ZipFile(fpi300) as zf:
        members = sorted(n for n in zf.namelist() if n.endswith(".jpg"))[:6]
        images = [Image.open(io.BytesIO(zf.read(n))).convert("RGB") for n in members]
    enc = encoders[name]
    originals = enc.embed_images(images)
    copies = enc.embed_images([shifted_copy(im) for im in images])
    similarity = copies @ originals.T
    assert (similarity.argmax(axis=1) == np.arange(len(images))).all()
    assert np.diag(similarity).min() > 0.85


def test_export_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    from vestis.encoders import onnx_encoder

    def broken_export(name, path):
        path.write_bytes(b"half a model")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_encoder, "export_backbone", broken_export)
    with pytest.raises(RuntimeError):
        builtin_model_path("mobilenetv2", tmp_path)
    assert os.listdir(tmp_path) == []

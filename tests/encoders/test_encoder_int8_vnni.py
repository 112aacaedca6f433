"""The 8-bit recipe for VNNI CPUs: its name and version, the default chosen from the CPU's flags,
and a collection built with it refused on a CPU without VNNI (flags faked) until it is reindexed
to the portable recipe."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import write_catalogue
from vestis.cli import app
from vestis.data import open_catalogue
from vestis.encoders import DEFAULT_ENCODER, default_encoder, get_encoder, list_encoders
from vestis.encoders import cpu as cpu_module
from vestis.encoders.onnx_encoder import builtin_model_path
from vestis.encoders.quantize import RECIPE, VNNI_RECIPE, backbone_of, needs_vnni, quantized_name, recipe_of
from vestis.errors import VestisError
from vestis.search.engine import Engine
from vestis.store.collection import Collection
from vestis.store.ingest import index_catalogue, open_or_create

PORTABLE, VNNI = "efficientnet-lite0-int8", "efficientnet-lite0-int8-vnni"
AVX2 = ("Fake AVX2 CPU", frozenset({"avx2"}))
WITH_VNNI = ("Fake VNNI CPU", frozenset({"avx2", "avx512f", "avx512_vnni"}))


def fake_cpu(monkeypatch, info):
    monkeypatch.setattr(cpu_module, "cpu_info", lambda: info)


def test_names_recipes_and_versions():
    assert quantized_name("efficientnet-lite0", vnni=True) == VNNI and VNNI in list_encoders()
    assert backbone_of(VNNI) == backbone_of(PORTABLE) == "efficientnet-lite0"
    assert needs_vnni(VNNI) and not needs_vnni(PORTABLE) and not needs_vnni("efficientnet-lite0")
    assert recipe_of(PORTABLE) == (RECIPE, {}) and recipe_of(VNNI) == (VNNI_RECIPE, {"reduce_range": False})
    assert recipe_of("efficientnet-lite0") is None
    from vestis.encoders import get_encoder_version

    assert get_encoder_version(PORTABLE) == f"{PORTABLE}/tf/crop224/v1/qdq-u8s7-minmax-synth256"  # as before
    assert get_encoder_version(VNNI) == f"{VNNI}/tf/crop224/v1/qdq-u8s8-minmax-synth256"


def test_the_default_is_chosen_from_the_cpu_flags():
    assert default_encoder(AVX2[1]) == PORTABLE
    assert default_encoder(WITH_VNNI[1]) == VNNI
    assert default_encoder(frozenset({"avx2", "avx_vnni"})) == VNNI
    assert DEFAULT_ENCODER == default_encoder(cpu_module.cpu_info()[1])


def test_the_vnni_recipe_is_refused_on_a_cpu_without_vnni(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, AVX2)
    with pytest.raises(VestisError, match=f"needs a CPU with VNNI.*Fake AVX2 CPU.*Use '{PORTABLE}'"):
        get_encoder(VNNI, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # refused before anything was built


@pytest.mark.slow
def test_a_vnni_collection_is_refused_without_vnni_until_reindexed(monkeypatch, tmp_path):
    write_catalogue(tmp_path / "shop", {"red": (200, 30, 30), "blue": (30, 50, 200)}, ["shirt", "trousers"])
    fake_cpu(monkeypatch, WITH_VNNI)  # built as on a VNNI CPU (on an AVX2 one the vectors are off, not the test)
    encoder = get_encoder(VNNI)
    assert builtin_model_path(VNNI) != builtin_model_path(PORTABLE)  # its own cached file
    coll = open_or_create(tmp_path / "c", encoder, "exact")
    index_catalogue(coll, open_catalogue(tmp_path / "shop"), encoder, batch_size=4, progress=False)
    coll.close()

    fake_cpu(monkeypatch, AVX2)  # the collection moved to a CPU without VNNI
    with Engine.open(tmp_path / "c") as engine, pytest.raises(VestisError) as refused:
        engine.encoder
    message = str(refused.value)
    assert "overflowing 8-bit sums" in message and "Fake AVX2 CPU" in message
    fix = f"vestis reindex --collection {tmp_path / 'c'} --encoder {PORTABLE}"
    assert message.endswith(fix)
    result = CliRunner().invoke(app, fix.split()[1:])
    assert result.exit_code == 0, result.output
    with Collection.open(tmp_path / "c") as c:
        assert c.encoder_name == PORTABLE
    with Engine.open(tmp_path / "c") as engine:
        assert engine.encoder.name == PORTABLE
        hit = engine.search(engine.query(image=Image.open(tmp_path / "shop" / "red-shirt-0.jpg")), k=1).hits[0]
        assert "red-shirt-0" in hit.id and np.isclose(hit.score, 1.0, atol=1e-3)  # the query matches its vector

"""The CLI's text search: `vestis search --text`, several --id with weights and --not, `vestis text info`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.search.test_text_search import collection  # noqa: F401 (fixture)
from tests.store.test_joint_index import joint_model
from vestis.cli import app
from vestis.errors import VestisError
from vestis.store.vector_builds import build_joint_index


def run(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_search_in_words_and_with_examples(collection, tmp_path):  # noqa: F811
    path = str(collection.path)
    keyword = run("search", "--collection", path, "--text", "silver watch", "--mode", "keyword")
    assert [r["id"] for r in keyword["results"]] == ["c"] and "search" in keyword["timings_ms"]
    with pytest.raises(VestisError, match="joint text-image model"):
        CliRunner().invoke(app, ["search", "--collection", path, "--text", "watch", "--mode", "vector"],
                           catch_exceptions=False)
    build_joint_index(collection, joint_model(tmp_path))
    info = run("text", "info", "--collection", path)
    assert info["items_embedded"] == 4
    hybrid = run("search", "--collection", path, "--text", "silver watch", "-k", "4")
    assert hybrid["results"][0]["id"] == "c" and len(hybrid["results"]) == 4
    examples = run("search", "--collection", path, "--id", "2:a", "--id", "b", "--not", "c")
    assert [r["id"] for r in examples["results"]] == ["d"]
    result = CliRunner().invoke(app, ["search", "--collection", path, "--text", "watch", "--attrs", "colour"])
    assert result.exit_code != 0 and "attributes cannot be combined with text" in result.output

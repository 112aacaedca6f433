"""The CLI on hostile files and a full disk: a clear message, never a traceback, and nothing lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import garment_image, jpeg_bytes
from vestis.cli import app

pytestmark = pytest.mark.slow  # builds a collection with the real encoder

COLOURS = ((200, 30, 30), (30, 50, 200), (30, 160, 60), (25, 25, 25), (240, 200, 20), (120, 20, 140))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Six garments with titles (so keyword search has words), indexed into a collection."""
    folder = tmp_path_factory.mktemp("shop")
    rows = ["id,path,title"]
    for n, colour in enumerate(COLOURS):
        (folder / f"g{n}.jpg").write_bytes(jpeg_bytes(garment_image(colour, "dress", seed=n)))
        rows.append(f"g{n},g{n}.jpg,dress number {n}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    path = tmp_path_factory.mktemp("coll") / "shop"
    result = vestis("index", str(folder), "--collection", str(path))
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def collection(built, tmp_path) -> Path:
    copy = tmp_path / "shop"
    shutil.copytree(built, copy)
    return copy


def vestis(*args: str) -> subprocess.CompletedProcess:
    """The installed entry point in a fresh process (errors go through `main`: message, exit 2)."""
    return subprocess.run([sys.executable, "-m", "vestis", *args], capture_output=True, text=True, timeout=300)


def said(result: subprocess.CompletedProcess) -> str:
    """What a command printed on either stream, with rich's line wrapping undone."""
    return " ".join((result.stdout + result.stderr).split())


def test_search_refuses_a_huge_file_unread(collection, tmp_path):
    """A 10 GB sparse file named .jpg is refused from its size at once, not read into memory."""
    huge = tmp_path / "x.jpg"
    with huge.open("wb") as f:
        f.truncate(10 * 1024**3)
    result = vestis("search", "--collection", str(collection), str(huge))
    assert result.returncode == 2
    assert "x.jpg is 10,737,418,240 bytes; the limit for an image is 268,435,456 bytes" in said(result)
    assert "Traceback" not in result.stderr


def test_serve_refuses_an_empty_api_key(collection):
    for env, args in (({"VESTIS_API_KEY": ""}, []), ({}, ["--api-key", ""])):
        result = subprocess.run([sys.executable, "-m", "vestis", "serve", "--collection", str(collection), *args],
                                capture_output=True, text=True, timeout=120,
                                env={k: v for k, v in os.environ.items() if k != "VESTIS_API_KEY"} | env)
        assert result.returncode == 2
        assert "empty" in said(result) and "Traceback" not in result.stderr


def test_remove_on_a_full_disk_keeps_the_removal_and_says_so(collection, monkeypatch):
    """The derived files fail to save (NumPy's short write on a full disk, which has no errno):
    the removal is committed, the command says so in one warning, and no half-written folder stays."""
    def full(*args, **kwargs):
        raise OSError("6400 requested and 3040 written")

    monkeypatch.setattr(np, "save", full)
    result = CliRunner().invoke(app, ["remove", "g0", "--collection", str(collection)])
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "warning: the disk holding" in output and "is full (6400 requested and 3040 written)" in output
    assert "the removal itself is saved" in output and "removed 1 item(s); collection holds 5 items" in output
    assert not [p.name for p in (collection / "cache").iterdir() if p.name.startswith(".")]
    again = vestis("search", "--collection", str(collection), "--id", "g1", "-k", "10", "--json")
    assert again.returncode == 0, again.stderr
    assert '"g0"' not in again.stdout and '"g2"' in again.stdout


@pytest.fixture
def full_disk(tmp_path):
    """A 4 MiB tmpfs (needs root; skipped elsewhere), unmounted after the test."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave_kib: int) -> None:
    free = shutil.disk_usage(disk).free
    with (disk / "filler").open("wb") as f:
        f.write(bytes(max(free - leave_kib * 1024, 0)))


def test_commands_on_a_full_disk_say_so_and_lose_nothing(built, full_disk):
    """On a full disk, `info`, `search` and `remove` say the disk is full (not that there is no
    collection); after space is freed the collection is whole."""
    collection = full_disk / "shop"
    shutil.copytree(built, collection)
    _fill(full_disk, 0)
    for args in (["info"], ["search", "--id", "g1"], ["search", "--text", "dress"], ["remove", "g0"]):
        result = vestis(*args, "--collection", str(collection))
        output = said(result)
        assert result.returncode == 2, (args, output)
        assert f"the disk holding {collection} is full" in output, (args, output)
        assert "no collection" not in output and "Traceback" not in output, (args, output)
    (full_disk / "filler").unlink()
    result = vestis("info", "--collection", str(collection), "--json")
    assert result.returncode == 0 and '"items": 6' in result.stdout


def test_keyword_search_prints_no_debug_lines(collection):
    """bm25s sets its own logger to DEBUG on import; the CLI prints warnings and errors only (here
    while the keyword index is built, which bm25s logs)."""
    for cached in (collection / "cache").glob("keywords-*"):
        shutil.rmtree(cached)
    result = vestis("search", "--collection", str(collection), "--text", "dress", "--mode", "keyword", "-k", "2")
    assert result.returncode == 0, said(result)
    assert "DEBUG" not in result.stderr and "g" in result.stdout
    assert list((collection / "cache").glob("keywords-*"))  # the index was built in this run

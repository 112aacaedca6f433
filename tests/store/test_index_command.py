"""`vestis index` as a user runs it (real processes on real generated JPEGs): --metadata, the
indexing lock between two runs, a full disk, a damaged collection; clear errors, never a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import garment_image, jpeg_bytes
from vestis.store.collection import Collection
from vestis.store.guards import indexing_lock

pytestmark = pytest.mark.slow  # each test runs `vestis index` with the real encoder

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")


def vestis(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vestis", *args], env=ENV, capture_output=True, text=True,
                          timeout=600, **kwargs)


def start(*args: str, stderr) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vestis", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=stderr, text=True)


def write_images(folder: Path, n: int, prefix: str = "img") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        rgb = ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)
        (folder / f"{prefix}{i:03d}.jpg").write_bytes(jpeg_bytes(garment_image(rgb, ("shirt", "dress")[i % 2], seed=i)))
        names.append(f"{prefix}{i:03d}")
    return names


def wait_for(path: Path, text: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while text not in path.read_text():
        assert proc.poll() is None, f"exited early: {path.read_text()}"
        assert time.time() < deadline, f"{text!r} never appeared in {path.read_text()!r}"
        time.sleep(0.1)


def test_metadata_option_indexes_a_folder_named_by_uuid(tmp_path):
    """images/<uuid>.jpg with images.csv naming each image by its bare uuid: `--metadata` labels them
    (the ids are the images' paths in the folder, which another image of the same name cannot change)."""
    uuids = ["4285fab0-751a", "ea7b6656-3f84", "00627a3f-0477"]
    for n, uuid in enumerate(uuids):
        (tmp_path / "shop" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "shop" / "images" / f"{uuid}.jpg").write_bytes(
            jpeg_bytes(garment_image((80 * n, 60, 200), ("shirt", "dress", "trousers")[n], seed=n)))
    (tmp_path / "shop" / "images.csv").write_text(
        f"image,label,kids\n{uuids[0]},T-Shirt,False\n{uuids[1]},Dress,False\n{uuids[2]},Pants,True\n")
    done = vestis("index", str(tmp_path / "shop"), "-c", str(tmp_path / "c"), "--json",
                  "--metadata", str(tmp_path / "shop" / "images.csv"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 3
    with Collection.open(tmp_path / "c") as coll:
        assert {it.id: it.metadata["label"] for it in coll.iter_items()} == \
            dict(zip([f"images/{u}" for u in uuids], ["T-Shirt", "Dress", "Pants"]))
    missing = vestis("index", str(tmp_path / "shop"), "-c", str(tmp_path / "c"), "--metadata", str(tmp_path / "no.csv"))
    assert missing.returncode == 2 and "cannot read the metadata table" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_second_index_waits_for_the_lock_holder_or_names_it_with_no_wait(tmp_path):
    folder, coll = tmp_path / "shop", tmp_path / "c"
    names = write_images(folder, 6)
    log = tmp_path / "waiting.log"
    with indexing_lock(coll):  # this test process holds the lock, as a running `vestis index` would
        refused = vestis("index", str(folder), "-c", str(coll), "--no-wait")
        assert refused.returncode == 2, refused.stderr
        assert f"being indexed by another process (pid {os.getpid()})" in refused.stderr
        assert "Traceback" not in refused.stderr and not Collection.exists(coll)
        with open(log, "w") as stderr:
            waiting = start("index", str(folder), "-c", str(coll), "--json", stderr=stderr)
        wait_for(log, f"(pid {os.getpid()}); waiting for it to finish", waiting)
        assert not Collection.exists(coll)  # it waits before it reads or writes anything
    out, _ = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, log.read_text()
    assert json.loads(out)["added"] == len(names)


def test_two_index_runs_at_once_embed_each_image_once(tmp_path):
    folder, coll = tmp_path / "shop", tmp_path / "c"
    names = write_images(folder, 12)
    runs = [start("index", str(folder), "-c", str(coll), "--json", "--batch-size", "4", stderr=subprocess.PIPE)
            for _ in range(2)]
    reports = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        reports.append(json.loads(out))
    assert sorted(r["embedded"] for r in reports) == [0, len(names)]
    assert sorted(r["added"] for r in reports) == [0, len(names)]
    assert sorted(r["unchanged"] for r in reports) == [0, len(names)]


def test_a_full_disk_is_one_clear_line_and_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    """The write fails as SQLite fails on a full disk; the command says so in one line."""
    from vestis import cli

    folder = tmp_path / "shop"
    write_images(folder, 4)
    real_upsert = Collection.upsert

    def full(self, items):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Collection, "upsert", full)
    monkeypatch.setattr(sys, "argv", ["vestis", "index", str(folder), "-c", str(tmp_path / "c")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == [f"error: the disk holding {tmp_path / 'c'} is full (database or disk is full). Free some "
                     "space and run the same command again: it resumes where this run stopped, and every item "
                     "committed so far is kept"]
    assert "Traceback" not in err
    monkeypatch.setattr(Collection, "upsert", real_upsert)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    with Collection.open(tmp_path / "c") as coll:
        assert len(coll) == 4


MOUNT = Path("/tmp/vestis-test-tmpfs")


@pytest.fixture
def tiny_disk():
    """A 160 KiB tmpfs (needs root; skipped elsewhere); made bigger with ``remount(size)``."""
    MOUNT.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(MOUNT)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield lambda size: subprocess.run(["mount", "-o", f"remount,size={size}", str(MOUNT)], check=True)
    finally:
        subprocess.run(["umount", str(MOUNT)], check=True)


def test_a_really_full_disk_stops_index_cleanly_and_a_rerun_resumes(tmp_path, tiny_disk):
    folder = tmp_path / "shop"
    names = write_images(folder, 40)
    coll = MOUNT / "c"
    full = vestis("index", str(folder), "-c", str(coll), "--batch-size", "4")
    assert full.returncode == 2, full.stderr
    assert f"error: the disk holding {coll} is full" in full.stderr and "Traceback" not in full.stderr
    with Collection.open(coll) as c:
        kept = len(c)
    assert kept < len(names)
    tiny_disk("20m")
    done = vestis("index", str(folder), "-c", str(coll), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["added"] == len(names) - kept and report["unchanged"] == kept

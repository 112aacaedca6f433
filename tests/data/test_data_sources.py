"""read_source round trips for plain paths, zip members and IDX images, and its error messages."""

from __future__ import annotations

import gzip
import io
import os
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vestis.data.sources import idx_uri, read_idx, read_source, zip_uri
from vestis.errors import CatalogueError


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """An IDX file as in Fashion-MNIST: 0x0000, type code 0x08 (ubyte), ndim, big-endian dims, data."""
    raw = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def test_plain_path_round_trip(tmp_path):
    p = tmp_path / "a b.jpg"
    p.write_bytes(b"\xff\xd8 some bytes")
    assert read_source(str(p)) == b"\xff\xd8 some bytes"
    with pytest.raises(CatalogueError, match="no such file"):
        read_source(str(tmp_path / "gone.jpg"))


def test_zip_member_round_trip_and_errors(tmp_path):
    archive = tmp_path / "shop.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/1.jpg", b"one")
        zf.writestr("images/deep/2.jpg", b"two" * 1000, compress_type=zipfile.ZIP_DEFLATED)
    uri = zip_uri(archive, "images/deep/2.jpg")
    assert uri == f"zip:{archive}::images/deep/2.jpg"
    assert read_source(uri) == b"two" * 1000
    assert read_source(zip_uri(archive, "images/1.jpg")) == b"one"
    with pytest.raises(CatalogueError, match=r"no member 'images/3\.jpg'"):
        read_source(zip_uri(archive, "images/3.jpg"))
    with pytest.raises(CatalogueError, match="no such file"):
        read_source(zip_uri(tmp_path / "other.zip", "images/1.jpg"))
    (tmp_path / "fake.zip").write_bytes(b"not a zip at all")
    with pytest.raises(CatalogueError, match="not a readable zip"):
        read_source(zip_uri(tmp_path / "fake.zip", "x.jpg"))
    with pytest.raises(CatalogueError, match="bad zip source"):
        read_source(f"zip:{archive}")


def test_zip_cache_notices_a_rewritten_archive(tmp_path):
    archive = tmp_path / "shop.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("1.jpg", b"old")
    assert read_source(zip_uri(archive, "1.jpg")) == b"old"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("1.jpg", b"new!")
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert read_source(zip_uri(archive, "1.jpg")) == b"new!"


def test_zip_reads_from_many_threads(tmp_path):
    archive = tmp_path / "shop.zip"
    payloads = {f"{i}.bin": os.urandom(20_000 + i) for i in range(16)}
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in payloads.items():
            zf.writestr(name, data)
    names = list(payloads) * 8
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda n: read_source(zip_uri(archive, n)), names))
    assert got == [payloads[n] for n in names]


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_gives_png_of_the_image(tmp_path, gz):
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / ("imgs-idx3-ubyte" + (".gz" if gz else "")), images, gz=gz)
    uri = idx_uri(path, 3)
    assert uri == f"idx:{path}::3"
    data = read_source(uri)
    assert data.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), images[3])
    with pytest.raises(CatalogueError, match=r"no image 5 \(the file holds 5\)"):
        read_source(idx_uri(path, 5))


def test_idx_errors_are_clear(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"GIF89a nonsense")
    with pytest.raises(CatalogueError, match="bad magic number"):
        read_idx(bad)
    good = write_idx(tmp_path / "cut-idx3-ubyte", np.zeros((4, 3, 3)))
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(CatalogueError, match="truncated or corrupt"):
        read_source(idx_uri(good, 0))
    labels = write_idx(tmp_path / "labels-idx1-ubyte", np.arange(4))
    assert read_idx(labels).tolist() == [0, 1, 2, 3]
    with pytest.raises(CatalogueError, match="not an IDX image file"):
        read_source(idx_uri(labels, 0))
    with pytest.raises(CatalogueError, match="bad IDX source"):
        read_source(f"idx:{labels}::first")


def _zip_with_bomb(path: Path, image: bytes, bomb_bytes: int) -> Path:
    """A small zip: one real image and ``bomb.jpg``, ``bomb_bytes`` of zeros deflated to almost nothing."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good.jpg", image)
        with zf.open("bomb.jpg", "w") as member:
            chunk = bytes(1024 * 1024)
            for _ in range(bomb_bytes // len(chunk)):
                member.write(chunk)
    return path


def test_zip_bomb_member_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    image = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(image, format="JPEG")
    archive = _zip_with_bomb(tmp_path / "bomb.zip", image.getvalue(), 32 * 1024 * 1024)
    assert archive.stat().st_size < 100_000
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    with pytest.raises(CatalogueError, match=r"bomb\.jpg' inflates [0-9,]+ times .*zip bomb.*skipped unread"):
        read_source(zip_uri(archive, "bomb.jpg"))
    assert "bomb.jpg" not in opened
    assert read_source(zip_uri(archive, "good.jpg")) == image.getvalue()


def test_members_and_files_over_the_size_limit_are_refused(tmp_path, monkeypatch):
    import vestis.data.sources as sources

    monkeypatch.setattr(sources, "MAX_SOURCE_BYTES", 1000)
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()  # does not compress
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.jpg", noise)
        zf.writestr("small.jpg", noise[:900])
    with pytest.raises(CatalogueError, match=r"'big.jpg' is 5,000 bytes uncompressed; the limit .* 1,000 bytes"):
        read_source(zip_uri(archive, "big.jpg"))
    assert read_source(zip_uri(archive, "small.jpg")) == noise[:900]
    (tmp_path / "big.jpg").write_bytes(noise)
    with pytest.raises(CatalogueError, match="larger than 1,000 bytes"):
        read_source(str(tmp_path / "big.jpg"))


def test_zip_members_that_climb_out_of_the_archive_are_skipped(tmp_path, caplog):
    from vestis.data import open_catalogue

    image = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(image, format="JPEG")
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("shop/ok.jpg", "../../x.jpg", "shop/../../y.jpg", "/etc/z.jpg", "..\\w.jpg"):
            zf.writestr(name, image.getvalue())
    ids = [item.id for item in open_catalogue(archive)]
    assert ids == ["shop/ok"]
    assert "4 member(s) with an absolute path or a '..' component are skipped" in caplog.text


def _refusal(fn) -> tuple[int, str]:
    """Peak Python allocation (bytes, NumPy arrays included) while ``fn()`` runs, and the message of
    the CatalogueError it raises ("" when it raises none)."""
    import tracemalloc

    tracemalloc.start()
    message = ""
    try:
        fn()
    except CatalogueError as e:
        message = str(e)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, message


def test_idx_gzip_bomb_is_inflated_no_further_than_its_header_declares(tmp_path):
    """A gzipped IDX file whose header declares 2 images of 28x28 but which inflates to 64 MiB is
    refused as corrupt after inflating about its declared size, not 64 MiB."""
    header = bytes([0, 0, 0x08, 3]) + np.array((2, 28, 28), ">u4").tobytes()
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(header)
        for _ in range(64):
            f.write(bytes(1024 * 1024))
    assert bomb.stat().st_size < 200_000
    peak, error = _refusal(lambda: read_idx(bomb))
    assert peak < 8 * 1024 * 1024
    assert "truncated or corrupt" in error and "(1568 bytes), file has more than that" in error


def test_idx_header_declaring_more_than_the_limit_is_refused_unread(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + np.array((100_000, 1000, 1000), ">u4").tobytes()
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(1000)))
    with pytest.raises(CatalogueError, match=r"declares \(100000, 1000, 1000\) values .* the limit is 268,435,456"):
        read_idx(path)


def test_zip_label_table_bomb_is_refused_before_it_is_inflated(tmp_path):
    """A zip whose metadata.csv inflates more than a real label table does (here 64 MiB of one
    line from about 64 KB) is refused with a clear message, without inflating it."""
    from vestis.data import open_catalogue

    image = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(image, format="JPEG")
    archive = tmp_path / "shop.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.jpg", image.getvalue())
        with zf.open("metadata.csv", "w") as member:
            member.write(b"id,colour\nx,")
            for _ in range(64):
                member.write(b"a" * (1024 * 1024))
    peak, error = _refusal(lambda: open_catalogue(archive))
    assert peak < 8 * 1024 * 1024
    assert re.search(r"member 'metadata.csv' inflates [0-9,]+ times .* a zip bomb, not a label table", error)


def test_zip_label_tables_that_compress_like_real_ones_are_read(tmp_path):
    """DeepFashion's attribute list (rows of 1000 '-1'/' 1' values) deflates about 180 times: under
    the table limit, so such a zip reads."""
    from vestis.data.sources import Archive

    rng = np.random.default_rng(0)
    lines = ["20000", "image_name attribute_labels"]
    for n in range(20000):
        values = np.full(1000, "-1", dtype=object)
        values[rng.choice(1000, 3, replace=False)] = " 1"
        lines.append(f"img/Sheer_Blouse/img_{n:08d}.jpg" + " " * 20 + " ".join(values))
    archive = tmp_path / "anno.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("list_attr_img.txt", "\n".join(lines))
    info = zipfile.ZipFile(archive).getinfo("list_attr_img.txt")
    assert info.file_size > 100 * info.compress_size
    with Archive(archive).open_text("list_attr_img.txt") as f:
        assert sum(1 for _ in f) == 20002


def test_label_table_line_and_size_bounds(tmp_path, monkeypatch):
    """A metadata table with no newline is refused at the line bound, reading no more than it."""
    import vestis.data.sources as sources
    from vestis.data import open_catalogue

    Image.new("RGB", (8, 8), "red").save(tmp_path / "x.jpg")
    table = tmp_path / "table.csv"
    with table.open("w") as f:
        f.write("id,colour\nx,")
        for _ in range(32):
            f.write("b" * (1024 * 1024))
    peak, error = _refusal(lambda: open_catalogue(tmp_path, metadata=table))
    assert peak < 3 * sources.MAX_LINE_CHARS  # the line read so far, and its parts
    assert re.search(r"table.csv, line 2: longer than 8,388,608 characters; not a label table", error)
    monkeypatch.setattr(sources, "MAX_TABLE_BYTES", 1000)
    table.write_text("id,colour\n" + "x,Blue\n" * 200)
    with pytest.raises(CatalogueError, match=r"table.csv: longer than 1,000 characters, the limit for a label table"):
        open_catalogue(tmp_path, metadata=table)

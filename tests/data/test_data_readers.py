"""Catalogue readers on small fixtures written in each dataset's documented format, plus the real zips."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import garment_image, jpeg_bytes
from PIL import Image
from test_data_sources import write_idx

from vestis.data import READERS, detect_format, open_catalogue
from vestis.data.fashion_mnist import DEBIAN_PATH
from vestis.data.fashionai import VALUE_NAMES
from vestis.data.images import decode_image
from vestis.data.sources import read_source
from vestis.errors import CatalogueError


def put_image(path: Path, colour=(200, 40, 40), fmt: str = "JPEG") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = garment_image(colour, size=(24, 32))
    data = jpeg_bytes(im) if fmt == "JPEG" else _encode(im, fmt)
    path.write_bytes(data)
    return data


def _encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())
    return archive


def summary(catalogue) -> list[tuple[str, dict]]:
    return [(item.id, item.metadata) for item in catalogue]


# ---------------------------------------------------------------- folder

def test_folder_with_csv_metadata(tmp_path, caplog):
    shop = tmp_path / "shop"
    red = put_image(shop / "tops" / "a1.jpg")
    put_image(shop / "tops" / "a2.PNG", (20, 20, 200), "PNG")
    put_image(shop / "b.webp", (20, 200, 20), "WEBP")
    put_image(shop / "unlabelled.jpeg")
    (shop / "notes.txt").write_text("not an image")
    (shop / "metadata.csv").write_text(
        "id,path,colour,year\n"
        "A1,tops/a1.jpg,red,2016.0\n"
        "A2,tops/a2.PNG,,2012\n"
        "B,b.webp,green,\n"
        "GONE,tops/missing.jpg,blue,2011\n")
    with caplog.at_level(logging.WARNING):
        cat = open_catalogue(shop)
    assert cat.format == "folder" and cat.columns == ["colour", "year"] and len(cat) == 4
    assert summary(cat) == [("B", {"colour": "green"}), ("A1", {"colour": "red", "year": "2016.0"}),
                            ("A2", {"year": "2012"}), ("unlabelled", {})]
    assert "1 metadata rows name no image" in caplog.text and "GONE" in caplog.text
    a1 = next(i for i in cat if i.id == "A1")
    st = (shop / "tops" / "a1.jpg").stat()
    assert a1.source == str(shop / "tops" / "a1.jpg")
    assert a1.stamp == f"{st.st_size}:{st.st_mtime_ns}"
    assert a1.read() == red == read_source(a1.source)


def test_folder_with_jsonl_ids_matched_by_file_stem(tmp_path):
    shop = tmp_path / "shop"
    for name in ("x/101.jpg", "x/102.jpg", "103.jpg"):
        put_image(shop / name)
    rows = [{"id": "101", "price": 25, "tags": ["a", "b"], "note": None},
            {"id": "103", "price": 9.5, "tags": [], "note": "sale"}]
    (shop / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    cat = open_catalogue(shop, "folder")
    assert cat.columns == ["price", "tags", "note"]
    assert summary(cat) == [("103", {"price": "9.5", "note": "sale"}), ("101", {"price": "25", "tags": "a|b"}),
                            ("x/102", {})]


def test_folder_zip_and_explicit_metadata(tmp_path):
    shop = tmp_path / "shop"
    data = put_image(shop / "imgs" / "1.jpg")
    put_image(shop / "imgs" / "2.jpg")
    labels = tmp_path / "my-labels.csv"
    labels.write_text("image,kind\nimgs/2.jpg,shirt\n")
    archive = zip_folder(shop, tmp_path / "shop.zip")
    for source in (shop, archive):
        cat = open_catalogue(source, metadata=labels)
        assert summary(cat) == [("imgs/1", {}), ("imgs/2", {"kind": "shirt"})]
    first = next(iter(cat))
    assert first.source == f"zip:{archive}::imgs/1.jpg"
    assert re.fullmatch(r"[0-9a-f]{8}:\d+", first.stamp) and first.stamp.endswith(f":{len(data)}")
    assert first.read() == data


def test_folder_csv_with_long_fields_reads_them_and_skips_rows_over_the_limit(tmp_path, caplog):
    """A 200,000-character description is read; a field over the reader's limit loses its row
    (reported), never the catalogue."""
    from vestis.data.tables import MAX_FIELD_CHARS

    for name in ("a", "b", "c"):
        put_image(tmp_path / f"{name}.jpg")
    long_text = "x" * 200_000
    (tmp_path / "metadata.csv").write_text(
        f"id,path,description\na,a.jpg,{long_text}\nb,b.jpg,\"{'y' * (MAX_FIELD_CHARS + 1)}\"\nc,c.jpg,short\n")
    with caplog.at_level(logging.WARNING):
        cat = open_catalogue(tmp_path)
    meta = dict(summary(cat))
    assert meta["a"] == {"description": long_text} and meta["c"] == {"description": "short"}
    assert meta["b"] == {}  # its row was skipped; the image is still an item
    assert "1 row(s) could not be read and are skipped (line 3: field larger than field limit" in caplog.text


def test_folder_with_a_table_naming_images_by_bare_stem(tmp_path, caplog):
    """``images/<uuid>.jpg`` with ``images.csv`` whose ``image`` column holds the uuid alone (the
    layout of a widely used clothing photo dataset), given with ``metadata=``. The item id is the
    image's path in the folder, so it stays the same when another image of that name appears."""
    uuids = ["4285fab0-751a-4b74-8e9b-43af05deee22", "ea7b6656-3f84-4eb3-9099-23e623fc1018", "00627a3f-0477"]
    for n, uuid in enumerate(uuids):
        put_image(tmp_path / "images" / f"{uuid}.jpg", (60 * n, 90, 200))
    (tmp_path / "images.csv").write_text(
        "image,sender_id,label,kids\n"
        f"{uuids[0]},124,Not sure,False\n{uuids[1]},148,T-Shirt,False\n{uuids[2]}.jpg,12,Shoes,True\n"
        "no-such-uuid,1,Dress,False\n")
    cat = open_catalogue(tmp_path, metadata=tmp_path / "images.csv")
    assert summary(cat) == [
        (f"images/{uuids[2]}", {"sender_id": "12", "label": "Shoes", "kids": "True"}),
        (f"images/{uuids[0]}", {"sender_id": "124", "label": "Not sure", "kids": "False"}),
        (f"images/{uuids[1]}", {"sender_id": "148", "label": "T-Shirt", "kids": "False"}),
    ]
    # A stem shared by two images matches neither, and the warning says the row is ambiguous and
    # names both images; the ids do not change.
    put_image(tmp_path / "more" / f"{uuids[1]}.jpg")
    caplog.clear()
    cat = open_catalogue(tmp_path, metadata=tmp_path / "images.csv")
    assert summary(cat) == [
        (f"images/{uuids[2]}", {"sender_id": "12", "label": "Shoes", "kids": "True"}),
        (f"images/{uuids[0]}", {"sender_id": "124", "label": "Not sure", "kids": "False"}),
        (f"images/{uuids[1]}", {}),
        (f"more/{uuids[1]}", {}),
    ]
    assert (f"1 metadata rows name a file that several images share, so they are ambiguous and skipped"
            in caplog.text)
    assert f"{uuids[1]} (images/{uuids[1]}.jpg or more/{uuids[1]}.jpg)" in caplog.text
    assert "name no image" not in caplog.text.replace("1 metadata rows name no image", "")


def test_folder_ids_do_not_change_when_an_unrelated_image_appears(tmp_path, caplog):
    """The hostile tester's case: a row ``u2.jpg,Blue`` labels ``a/u2.jpg``; adding ``b/u2.jpg``
    must neither rename ``a/u2`` nor pass the row's label off as naming no image."""
    put_image(tmp_path / "a" / "u2.jpg")
    put_image(tmp_path / "c" / "other.jpg")
    (tmp_path / "metadata.csv").write_text("file,colour\nu2.jpg,Blue\nc/other.jpg,Red\n")
    assert summary(open_catalogue(tmp_path)) == [("a/u2", {"colour": "Blue"}), ("c/other", {"colour": "Red"})]
    put_image(tmp_path / "b" / "u2.jpg", (10, 200, 10))
    caplog.clear()
    assert summary(open_catalogue(tmp_path)) == [("a/u2", {}), ("b/u2", {}), ("c/other", {"colour": "Red"})]
    assert "ambiguous" in caplog.text and "u2.jpg (a/u2.jpg or b/u2.jpg)" in caplog.text
    assert "name no image" not in caplog.text


def test_folder_table_with_a_repeated_id_column_is_refused(tmp_path):
    put_image(tmp_path / "x.jpg")
    (tmp_path / "metadata.csv").write_text("id,colour,id\nx,Blue,y\n")
    with pytest.raises(CatalogueError, match=r"metadata.csv: the column 'id' appears 2 times \('id', 'id'\)"):
        open_catalogue(tmp_path)
    (tmp_path / "metadata.csv").write_text("path,colour,Path\nx.jpg,Blue,y.jpg\n")
    with pytest.raises(CatalogueError, match=r"the column 'path' appears 2 times \('path', 'Path'\)"):
        open_catalogue(tmp_path)


def test_folder_long_metadata_table_is_streamed_not_held(tmp_path):
    """A table of many rows naming no image costs little memory: rows are matched one at a time."""
    import tracemalloc

    put_image(tmp_path / "shop" / "x1.jpg")
    table = tmp_path / "big.csv"
    with table.open("w") as f:
        f.write("path,colour\nx1.jpg,Blue\n")
        f.writelines(f"gone{n}.jpg,Red\n" for n in range(400_000))
    tracemalloc.start()
    try:
        cat = open_catalogue(tmp_path / "shop", metadata=table)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary(cat) == [("x1", {"colour": "Blue"})]
    assert peak < 8_000_000, f"reading the table peaked at {peak:,} bytes"


def test_folder_metadata_needs_an_id_or_path_column(tmp_path):
    put_image(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("colour\nred\n")
    with pytest.raises(CatalogueError, match="needs an 'id' column or a path column"):
        open_catalogue(tmp_path)


# ---------------------------------------------------------------- Fashion Product Images

STYLES = (
    "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"
    "15970,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011.0,Casual,Turtle Check Men Navy Blue Shirt\n"
    "39386,Men,Apparel,Bottomwear,Jeans,Blue,Summer,2012.0,Casual,Peter England Men Party Blue Jeans\n"
    "59263,Women,Accessories,Watches,Watches,Silver,Winter,2016.0,,Titan Women Silver Watch\n"
    "11111,Men,Apparel,Topwear,Tshirts,Red,Summer,2012.0,Casual,Gone\n"
    "21379,Men,Apparel,Bottomwear,Track Pants,Black,Fall,2011.0,Casual,Manchester United, Men Solid Black, Pants\n"
)


def make_fpi(root: Path) -> Path:
    for i, pid in enumerate(("15970", "39386", "59263", "21379")):
        put_image(root / "images" / f"{pid}.jpg", (40 * i, 80, 120))
    (root / "styles.csv").write_text(STYLES)
    return root


def test_fashion_product_folder_and_zip_agree(tmp_path):
    root = make_fpi(tmp_path / "fpi")
    archive = zip_folder(root, tmp_path / "fpi.zip", prefix="myntradataset/")
    from_folder, from_zip = open_catalogue(root), open_catalogue(archive)
    assert from_folder.format == from_zip.format == "fashion-product"
    assert summary(from_folder) == summary(from_zip)
    assert len(from_zip) == 4 and [i.id for i in from_zip] == ["15970", "39386", "59263", "21379"]
    meta = dict(summary(from_zip))
    assert meta["15970"] == {"gender": "Men", "masterCategory": "Apparel", "subCategory": "Topwear",
                             "articleType": "Shirts", "baseColour": "Navy Blue", "season": "Fall", "year": "2011",
                             "usage": "Casual", "productDisplayName": "Turtle Check Men Navy Blue Shirt"}
    assert "usage" not in meta["59263"]
    assert meta["21379"]["productDisplayName"] == "Manchester United, Men Solid Black, Pants"
    assert meta["21379"]["usage"] == "Casual"
    item = next(iter(from_zip))
    assert item.source == f"zip:{archive}::myntradataset/images/15970.jpg"
    assert item.read() == (root / "images" / "15970.jpg").read_bytes()


def test_limit_keeps_the_first_items_of_every_format(tmp_path):
    """``--limit`` is presented as general: formats without a limit of their own get the first N."""
    root = make_fpi(tmp_path / "fpi")
    limited = open_catalogue(root, limit=2)
    assert limited.format == "fashion-product" and len(limited) == 2
    assert [i.id for i in limited] == ["15970", "39386"] and [i.id for i in limited] == ["15970", "39386"]
    assert len(open_catalogue(root, limit=10)) == 4
    assert [i.id for i in open_catalogue(root / "images", "folder", limit=1)] == ["15970"]
    with pytest.raises(CatalogueError, match="limit must be a whole number, zero or more, not -1"):
        open_catalogue(root, limit=-1)


# ---------------------------------------------------------------- Clothing Attribute Dataset

CA_HEADER = ("image,black,blue,brown,category,collar,cyan,gender,gray,green,many_colors,neckline,necktie,"
             "pattern_floral,pattern_graphics,pattern_plaid,pattern_solid,pattern_spot,pattern_stripe,placket,"
             "purple,red,scarf,skin_exposure,sleevelength,white,yellow")
CA_ROWS = [
    # solid black suit, long sleeves, v-neck, male
    "images/000001.jpg,2.0,1.0,1.0,5.0,2.0,1.0,1.0,1.0,1.0,1.0,1.0,2.0,1.0,1.0,1.0,2.0,1.0,1.0,2.0,1.0,1.0,1.0,1.0,3.0,1.0,1.0",
    # two pattern flags and two colours set: no derived pattern/colour; empty category and neckline
    "images/000002.jpg,2.0,1.0,1.0,,1.0,1.0,2.0,1.0,1.0,1.0,,1.0,2.0,1.0,1.0,1.0,1.0,2.0,1.0,1.0,2.0,1.0,2.0,1.0,1.0,1.0",
    # floral, many colours, tank top, pattern_solid unknown
    "images/000003.jpg,1.0,1.0,1.0,6.0,1.0,1.0,2.0,1.0,1.0,2.0,2.0,1.0,2.0,1.0,1.0,,1.0,1.0,1.0,1.0,1.0,1.0,2.0,1.0,1.0,1.0",
    "images/000004.jpg,1.0,1.0,1.0,6.0,1.0,1.0,2.0,1.0,1.0,2.0,2.0,1.0,2.0,1.0,1.0,,1.0,1.0,1.0,1.0,1.0,1.0,2.0,1.0,1.0,1.0",
]


def test_clothing_attributes_values_and_derived_attributes(tmp_path, caplog):
    root = tmp_path / "ca"
    for n in range(1, 4):
        put_image(root / "images" / f"00000{n}.jpg")
    (root / "labels.csv").write_text(CA_HEADER + "\n" + "\n".join(CA_ROWS) + "\n")
    with caplog.at_level(logging.WARNING):
        cat = open_catalogue(root)
    assert cat.format == "clothing-attributes" and len(cat) == 3
    assert "000004.jpg" in caplog.text
    assert cat.columns[-2:] == ["pattern", "colour"]
    meta = dict(summary(cat))
    first = meta["000001"]
    assert (first["category"], first["sleevelength"], first["neckline"], first["gender"]) == \
        ("suit", "long", "v-shape", "male")
    assert (first["necktie"], first["skin_exposure"], first["pattern"], first["colour"]) == \
        ("yes", "low", "solid", "black")
    second = meta["000002"]
    assert "category" not in second and "neckline" not in second
    assert "pattern" not in second and "colour" not in second
    assert (second["gender"], second["skin_exposure"]) == ("female", "high")
    third = meta["000003"]
    assert "pattern_solid" not in third
    assert (third["category"], third["neckline"], third["sleevelength"]) == ("tank top", "round", "none")
    assert (third["pattern"], third["colour"]) == ("floral", "many_colors")


# ---------------------------------------------------------------- Fashion-MNIST

def make_mnist(folder: Path, n_train: int = 5, n_test: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    train, test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (n_train, n_test))
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", train, gz=True)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10, gz=True)
    write_idx(folder / "t10k-images-idx3-ubyte", test)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.array([9, 0, 8][:n_test]))
    return train, test


def test_fashion_mnist_from_idx_files(tmp_path):
    train, test = make_mnist(tmp_path / "fm")
    cat = open_catalogue(tmp_path / "fm")
    assert cat.format == "fashion-mnist" and len(cat) == 8 and cat.size == 8
    items = list(cat)
    assert [i.id for i in items] == [f"train-0000{n}" for n in range(5)] + [f"test-0000{n}" for n in range(3)]
    assert items[1].metadata == {"label": "Trouser", "label_id": "1", "split": "train"}
    assert items[5].metadata == {"label": "Ankle boot", "label_id": "9", "split": "test"}
    assert items[0].metadata["label"] == "T-shirt/top" and items[7].metadata["label"] == "Bag"
    assert items[6].source == f"idx:{tmp_path / 'fm' / 't10k-images-idx3-ubyte'}::1"
    size = (tmp_path / "fm" / "train-images-idx3-ubyte.gz").stat().st_size
    assert items[2].stamp.startswith(f"{size}:") and items[2].stamp.endswith(":2")
    im = decode_image(items[6].read())
    assert im.size == (28, 28) and np.array_equal(np.asarray(im)[..., 0], test[1])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(items[3].read()))), train[3])
    limited = open_catalogue(tmp_path / "fm", limit=2)
    assert [i.id for i in limited] == ["train-00000", "train-00001", "test-00000", "test-00001"]


def test_fashion_mnist_bad_files(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([1, 2, 12]))
    with pytest.raises(CatalogueError, match=r"labels outside 0\.\.9"):
        open_catalogue(tmp_path, "fashion-mnist")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x99\x01rubbish")
    with pytest.raises(CatalogueError, match="bad magic number"):
        open_catalogue(tmp_path, "fashion-mnist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogueError, match="no Fashion-MNIST files"):
        open_catalogue(tmp_path / "empty", "fashion-mnist")


@pytest.mark.skipif(not DEBIAN_PATH.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_debian_package():
    cat = open_catalogue("fashion-mnist", limit=2)
    assert len(cat) == 4
    first = next(iter(cat))
    assert (first.id, first.metadata["label"]) == ("train-00000", "Ankle boot")
    assert decode_image(first.read()).size == (28, 28)
    assert open_catalogue("fashion-mnist").size == 70_000


# ---------------------------------------------------------------- DeepFashion

def make_deepfashion(root: Path) -> None:
    anno, images = root / "Anno", ["img/Floral_Dress/img_00000001.jpg", "img/Denim_Shorts/img_00000002.jpg",
                                   "img/Floral_Dress/img_00000003.jpg", "img/Gone_Tee/img_00000004.jpg"]
    for n, name in enumerate(images[:3]):
        put_image(root / name, (60 * n, 90, 90))
    anno.mkdir()
    (anno / "list_category_cloth.txt").write_text(
        "3\ncategory_name  category_type\nBlouse                   1\nShorts                   2\n"
        "Dress                    3\n")
    (anno / "list_category_img.txt").write_text(
        "4\nimage_name  category_label\n" + "".join(f"{n}   {c}\n" for n, c in zip(images, (3, 2, 3, 1))))
    attributes = [("floral", 1), ("denim", 2), ("a-line", 3), ("pleated hem", 4), ("boho chic", 5), ("dot", 1)]
    (anno / "list_attr_cloth.txt").write_text(
        "6\nattribute_name  attribute_type\n" + "".join(f"{a:<20} {t}\n" for a, t in attributes))
    values = {images[0]: "1 -1 1 1 -1 1", images[1]: "-1 1 0 -1 -1 -1", images[3]: "1 -1 -1 -1 -1 -1"}
    (anno / "list_attr_img.txt").write_text(
        "3\nimage_name  attribute_labels\n" + "".join(f"{n}  {v}\n" for n, v in values.items()))
    (root / "Eval").mkdir()
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "4\nimage_name  evaluation_status\n" + "".join(f"{n} {s}\n" for n, s in zip(images, ("train", "val", "test", "train"))))


def test_deepfashion_categories_attributes_and_split(tmp_path, caplog):
    make_deepfashion(tmp_path / "df")
    with caplog.at_level(logging.WARNING):
        cat = open_catalogue(tmp_path / "df")
        got = summary(cat)
    assert cat.format == "deepfashion" and cat.size is None and len(cat) == 3
    assert got == [
        ("Floral_Dress/img_00000001", {"category": "Dress", "category_type": "full", "split": "train",
                                       "texture": "floral|dot", "shape": "a-line", "part": "pleated hem"}),
        ("Denim_Shorts/img_00000002", {"category": "Shorts", "category_type": "lower", "split": "val",
                                       "fabric": "denim"}),
        ("Floral_Dress/img_00000003", {"category": "Dress", "category_type": "full", "split": "test"}),
    ]
    assert "Gone_Tee/img_00000004.jpg" in caplog.text
    assert cat.columns == ["category", "category_type", "split", "texture", "fabric", "shape", "part", "style"]


def test_deepfashion_images_packed_in_img_zip(tmp_path):
    make_deepfashion(tmp_path / "df")
    (tmp_path / "df" / "Img").mkdir()
    zip_folder(tmp_path / "df", tmp_path / "df" / "Img" / "img.zip")  # holds img/... (and the txt files)
    shutil.rmtree(tmp_path / "df" / "img")
    items = list(open_catalogue(tmp_path / "df"))
    assert len(items) == 3
    assert items[0].source == f"zip:{tmp_path / 'df' / 'Img' / 'img.zip'}::img/Floral_Dress/img_00000001.jpg"
    assert decode_image(items[0].read()).size == (24, 32)


def make_inshop(root: Path) -> list[str]:
    names = ["img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "img/WOMEN/Dresses/id_00000002/02_2_side.jpg",
             "img/MEN/Denim/id_00000080/01_1_front.jpg"]
    for n, name in enumerate(names):
        put_image(root / "Img" / name, (30, 60 * n, 30))
    (root / "Eval").mkdir(parents=True)
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "3\nimage_name item_id evaluation_status\n"
        + "".join(f"{n}  {i}  {s}\n" for n, i, s in zip(names, ("id_00000002", "id_00000002", "id_00000080"),
                                                          ("train", "query", "gallery"))))
    return names


def test_deepfashion_inshop(tmp_path):
    make_inshop(tmp_path / "inshop")
    for source in (tmp_path / "inshop", zip_folder(tmp_path / "inshop", tmp_path / "inshop.zip")):
        cat = open_catalogue(source)
        assert cat.format == "deepfashion-inshop" and cat.columns == ["item_id", "split"]
        assert summary(cat) == [
            ("WOMEN/Dresses/id_00000002/02_1_front", {"item_id": "id_00000002", "split": "train"}),
            ("WOMEN/Dresses/id_00000002/02_2_side", {"item_id": "id_00000002", "split": "query"}),
            ("MEN/Denim/id_00000080/01_1_front", {"item_id": "id_00000080", "split": "gallery"}),
        ]
    assert next(iter(cat)).source.endswith("inshop.zip::Img/img/WOMEN/Dresses/id_00000002/02_1_front.jpg")


# ---------------------------------------------------------------- FashionAI

def test_fashionai_labels_merge_per_image(tmp_path):
    root = tmp_path / "fashionAI_attributes_train1"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        put_image(root / "Images" / "coat_length_labels" / name)
    (root / "Annotations").mkdir()
    (root / "Annotations" / "label.csv").write_text(
        "Images/coat_length_labels/a.jpg,coat_length_labels,nnynnnnn\n"
        "Images/coat_length_labels/a.jpg,sleeve_length_labels,nnnnnnmyn\n"
        "Images/coat_length_labels/b.jpg,coat_length_labels,nnnmnnnn\n"
        "Images/coat_length_labels/c.jpg,collar_design_labels,ynnnn\n"
        "Images/coat_length_labels/gone.jpg,collar_design_labels,nynnn\n")
    cat = open_catalogue(root)
    assert cat.format == "fashionai" and cat.columns == ["sleeve_length", "coat_length", "collar_design"]
    assert summary(cat) == [("coat_length_labels/a", {"coat_length": "2", "sleeve_length": "7"}),
                            ("coat_length_labels/b", {}),
                            ("coat_length_labels/c", {"collar_design": "0"})]
    assert VALUE_NAMES["sleeve_length"][7] == "Long Sleeves"
    assert VALUE_NAMES["coat_length"][2] == "Regular Length"
    assert {len(v) for v in VALUE_NAMES.values()} == {5, 6, 8, 9, 10} and len(VALUE_NAMES) == 8


# ---------------------------------------------------------------- open_catalogue

def test_open_catalogue_errors(tmp_path):
    with pytest.raises(CatalogueError, match="no such file or folder.*fashion-product"):
        open_catalogue(tmp_path / "nope")
    with pytest.raises(CatalogueError, match="unknown catalogue format 'pdf'; valid formats: folder, "):
        open_catalogue(tmp_path, "pdf")
    with pytest.raises(CatalogueError, match="does not take option.*colour.*it takes: metadata"):
        open_catalogue(tmp_path, "folder", colour="red")
    with pytest.raises(CatalogueError, match="no styles.csv"):
        open_catalogue(tmp_path, "fashion-product")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CatalogueError, match="not a folder or a zip"):
        open_catalogue(tmp_path / "file.txt")
    assert set(READERS) == {"folder", "fashion-product", "clothing-attributes", "fashion-mnist", "deepfashion",
                            "deepfashion-inshop", "fashionai"}


def test_detect_format_of_each_layout(tmp_path):
    make_fpi(tmp_path / "fpi")
    make_mnist(tmp_path / "fm", 1, 1)
    make_deepfashion(tmp_path / "df")
    make_inshop(tmp_path / "inshop")
    put_image(tmp_path / "plain" / "a.jpg")
    (tmp_path / "plain" / "labels.csv").write_text("image,sleevecolour\na.jpg,red\n")
    assert detect_format(tmp_path / "fpi") == "fashion-product"
    assert detect_format(tmp_path / "fm") == "fashion-mnist"
    assert detect_format(tmp_path / "fm" / "t10k-images-idx3-ubyte") == "fashion-mnist"
    assert detect_format(tmp_path / "df") == "deepfashion"
    assert detect_format(tmp_path / "inshop") == "deepfashion-inshop"
    assert detect_format(tmp_path / "plain") == "folder"


# ---------------------------------------------------------------- the shared real datasets

@pytest.mark.shared
def test_real_fashion_product_images_300(fpi300):
    cat = open_catalogue(fpi300)
    assert cat.format == "fashion-product" and len(cat) == 2946
    items = list(cat)
    assert len({i.id for i in items}) == 2946
    assert sum("articleType" in i.metadata and "baseColour" in i.metadata for i in items) >= 2900
    watch = next(i for i in items if i.id == "59263")
    assert watch.metadata["articleType"] == "Watches" and watch.metadata["baseColour"] == "Silver"
    assert watch.metadata["year"] == "2016"
    assert decode_image(watch.read(), source=watch.source).size == (225, 300)


@pytest.mark.shared
def test_real_clothing_attributes(clothing_attributes_zip):
    cat = open_catalogue(clothing_attributes_zip)
    assert cat.format == "clothing-attributes" and len(cat) == 1856
    meta = {i.id: i for i in cat}
    first = meta["000001"].metadata
    assert (first["category"], first["sleevelength"], first["neckline"], first["gender"], first["colour"]) == \
        ("suit", "long", "v-shape", "male", "black")
    assert "pattern" not in first and "pattern_solid" not in first
    fifth = meta["000005"].metadata
    assert (fifth["category"], fifth["pattern"], fifth["colour"], fifth["skin_exposure"]) == \
        ("tank top", "solid", "white", "high")
    assert "neckline" not in fifth
    assert decode_image(meta["000101"].read()).mode == "RGB"

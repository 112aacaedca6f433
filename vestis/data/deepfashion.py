"""Readers for DeepFashion (Liu et al., CVPR 2016): the Category and Attribute Prediction benchmark
and the In-shop Clothes Retrieval benchmark.

Their annotation files share one layout: the first line is a count, the second a header, then one
whitespace-separated row per entry. Image paths in them start with ``img/``; the images may sit
next to the annotations (``img/``), under ``Img/img/``, or still packed in ``Img/img.zip``.
Both readers accept the dataset folder or a zip of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TextIO

from vestis.data.base import Catalogue, CatalogueItem
from vestis.data.sources import Archive, Container, Folder, iter_items, open_container
from vestis.errors import CatalogueError

CATEGORY_TYPES = {1: "upper", 2: "lower", 3: "full"}
ATTRIBUTE_TYPES = {1: "texture", 2: "fabric", 3: "shape", 4: "part", 5: "style"}
CATEGORY_IMAGES = "list_category_img.txt"
PARTITION = "list_eval_partition.txt"


def _rows(f: TextIO, name: str, fields: int) -> Iterator[list[str]]:
    """The rows of a list file (count and header lines skipped), each with at least ``fields`` tokens."""
    for number, line in enumerate(f, 1):
        tokens = line.split()
        if number <= 2 or not tokens:
            continue
        if len(tokens) < fields:
            raise CatalogueError(f"{name}, line {number}: expected {fields} fields, found {len(tokens)}")
        yield tokens


def _header(container: Container, name: str) -> list[str]:
    with container.open_text(name) as f:
        next(f, "")
        return next(f, "").split()


def _named_types(container: Container, name: str, types: dict[int, str]) -> list[tuple[str, str]]:
    """(name, type name) rows of list_category_cloth / list_attr_cloth: the last token is the type,
    the tokens before it the (possibly multi-word) name."""
    if not container.exists(name):
        raise CatalogueError(f"{container.root}: {name} is missing")
    named = []
    with container.open_text(name) as f:
        for tokens in _rows(f, name, 2):
            kind = types.get(int(tokens[-1])) if tokens[-1].isdigit() else None
            if kind is None:
                raise CatalogueError(f"{name}: unknown type {tokens[-1]!r} for {' '.join(tokens[:-1])!r}")
            named.append((" ".join(tokens[:-1]), kind))
    return named


def _positions(values: list[str], wanted: str) -> list[int]:
    """Indices of ``wanted`` in ``values`` (``list.index`` scans in C: rows have 1000 values, few positive)."""
    found: list[int] = []
    try:
        while True:
            found.append(values.index(wanted, found[-1] + 1 if found else 0))
    except ValueError:
        return found


def _base(folder: str, expected: str) -> str:
    """The dataset's root prefix, given the folder of an annotation file (``Anno``, ``Eval``...)."""
    path = PurePosixPath(folder)
    root = path.parent if path.name == expected else path
    return "" if str(root) == "." else f"{root}/"


def _image_store(container: Container, base: str, first_image: str | None) -> tuple[Container, str]:
    """The container and prefix under which the annotations' ``img/...`` paths exist."""
    if first_image is not None:
        for prefix in (base, f"{base}Img/"):
            if container.exists(prefix + first_image):
                return container, prefix
        if isinstance(container, Folder):
            for packed in (container.root / base / "Img" / "img.zip", container.root / base / "img.zip"):
                if packed.is_file():
                    return Archive(packed), ""
    return container, base  # images absent: every entry is reported missing


def _item_id(image: str) -> str:
    return str(PurePosixPath(image.removeprefix("img/")).with_suffix(""))


def read_deepfashion(source: str | Path) -> Catalogue:
    """Category and Attribute Prediction: ``Anno/list_category_cloth.txt``, ``list_category_img.txt``,
    ``list_attr_cloth.txt``, ``list_attr_img.txt`` (streamed: it is large) and
    ``Eval/list_eval_partition.txt``.

    Metadata: ``category``, ``category_type`` (upper/lower/full), ``split`` (train/val/test) and, per
    attribute type (texture, fabric, shape, part, style), the positive attribute names joined by
    ``|`` (left out when none). Items come in ``list_attr_img.txt`` order, then any image that only
    the category list names. The size is unknown until the catalogue is walked.
    """
    container = open_container(source)
    found = container.find(CATEGORY_IMAGES)
    if found is None:
        raise CatalogueError(f"{container.root}: no Anno/{CATEGORY_IMAGES} found (DeepFashion Category and "
                             "Attribute Prediction layout)")
    anno = found[: -len(CATEGORY_IMAGES)]
    base = _base(anno.rstrip("/"), "Anno")
    categories = _named_types(container, anno + "list_category_cloth.txt", CATEGORY_TYPES)
    image_category: dict[str, tuple[str, str]] = {}
    with container.open_text(found) as f:
        for image, label, *_ in _rows(f, found, 2):
            if not (label.isdigit() and 1 <= int(label) <= len(categories)):
                raise CatalogueError(f"{found}: {image} has category {label!r}, not 1..{len(categories)}")
            image_category[image] = categories[int(label) - 1]
    split: dict[str, str] = {}
    if container.exists(f"{base}Eval/{PARTITION}"):
        with container.open_text(f"{base}Eval/{PARTITION}") as f:
            split = {image: status for image, status, *_ in _rows(f, PARTITION, 2)}
    attr_images = anno + "list_attr_img.txt"
    attributes = (_named_types(container, anno + "list_attr_cloth.txt", ATTRIBUTE_TYPES)
                  if container.exists(attr_images) else [])
    store, prefix = _image_store(container, base, next(iter(image_category), None))

    def metadata(image: str, positives: list[int]) -> dict[str, str]:
        meta = dict(zip(("category", "category_type"), image_category.get(image, ())))
        if image in split:
            meta["split"] = split[image]
        for kind in ATTRIBUTE_TYPES.values():
            names = [attributes[i][0] for i in positives if attributes[i][1] == kind]
            if names:
                meta[kind] = "|".join(names)
        return meta

    def entries() -> Iterator[tuple[str, str, dict[str, str]]]:
        seen = set()
        if attributes:
            with container.open_text(attr_images) as f:
                for image, *values in _rows(f, attr_images, len(attributes) + 1):
                    seen.add(image)
                    positives = _positions(values, "1")
                    yield _item_id(image), prefix + image, metadata(image, positives)
        for image in image_category:
            if image not in seen:
                yield _item_id(image), prefix + image, metadata(image, [])

    def items() -> Iterator[CatalogueItem]:
        return iter_items(store, entries(), "the DeepFashion annotations")

    columns = ["category", "category_type", "split", *ATTRIBUTE_TYPES.values()]
    return Catalogue("deepfashion", container.root, columns, items)


def find_inshop_partition(container: Container) -> str | None:
    """The In-shop ``list_eval_partition.txt`` (its header names ``item_id``), if the container has one."""
    found = container.find(PARTITION)
    return found if found is not None and "item_id" in _header(container, found) else None


def read_deepfashion_inshop(source: str | Path) -> Catalogue:
    """In-shop Clothes Retrieval: ``list_eval_partition.txt`` (``image_name item_id evaluation_status``)
    and the images under ``img/``. Metadata: ``item_id`` and ``split`` (train/query/gallery)."""
    container = open_container(source)
    found = find_inshop_partition(container)
    if found is None:
        raise CatalogueError(f"{container.root}: no {PARTITION} with an item_id column found (DeepFashion "
                             "In-shop Clothes Retrieval layout)")
    with container.open_text(found) as f:
        rows = list(_rows(f, found, 3))
    store, prefix = _image_store(container, _base(found[: -len(PARTITION)].rstrip("/"), "Eval"),
                                 rows[0][0] if rows else None)
    entries = ((_item_id(image), prefix + image, {"item_id": item, "split": status})
               for image, item, status, *_ in rows)
    items = list(iter_items(store, entries, PARTITION))
    return Catalogue("deepfashion-inshop", container.root, ["item_id", "split"], items.__iter__, len(items))

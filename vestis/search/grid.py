"""Contact sheets: the query image, then the results with id and score under each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from vestis.data.images import decode_image
from vestis.data.sources import read_source
from vestis.errors import VestisError
from vestis.search.regions import RegionHits
from vestis.search.results import SearchHit
from vestis.store.collection import Collection

CELL = 160
CAPTION = 40
PAD = 8
_BOX_COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e"]


def _thumb(image: Image.Image | None) -> Image.Image:
    """Fit an image into a CELL x CELL white square (a grey cross when it could not be read)."""
    cell = Image.new("RGB", (CELL, CELL), "white")
    if image is None:
        d = ImageDraw.Draw(cell)
        d.line((0, 0, CELL, CELL), fill="#bbb", width=2)
        d.line((0, CELL, CELL, 0), fill="#bbb", width=2)
        return cell
    scale = min(CELL / image.width, CELL / image.height)  # small images (28 px) are enlarged too
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    im = image.resize(size, Image.Resampling.BICUBIC)
    cell.paste(im, ((CELL - im.width) // 2, (CELL - im.height) // 2))
    return cell


def load_source_image(source: str) -> Image.Image | None:
    try:
        return decode_image(read_source(source), source=source)
    except VestisError:
        return None


Cell = tuple[Image.Image | None, str, str] | tuple[Image.Image | None, str, str, str]


def contact_sheet(query: Image.Image | None, results: Sequence[Cell], out_path: Path, *, columns: int = 6,
                  query_caption: str = "query") -> Path:
    """Write a PNG grid: the query first (outlined in red), then each result as (image, line 1,
    line 2[, outline colour]) — evaluation grids outline relevant results green, others grey."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet_image(query, results, columns=columns, query_caption=query_caption).save(out_path)
    return out_path


def sheet_image(query: Image.Image | None, results: Sequence[Cell], *, columns: int = 6,
                query_caption: str = "query") -> Image.Image:
    """The grid of :func:`contact_sheet`, as an image."""
    cells = [(query, query_caption, "", "#d62728")] if query is not None else []
    cells += list(results)
    if not cells:
        raise VestisError("nothing to draw")
    columns = max(1, min(columns, len(cells)))
    rows = (len(cells) + columns - 1) // columns
    w = columns * (CELL + PAD) + PAD
    h = rows * (CELL + CAPTION + PAD) + PAD
    sheet = Image.new("RGB", (w, h), "#f4f4f4")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for i, (image, line1, line2, *outline) in enumerate(cells):
        x = PAD + (i % columns) * (CELL + PAD)
        y = PAD + (i // columns) * (CELL + CAPTION + PAD)
        sheet.paste(_thumb(image), (x, y))
        if outline:
            draw.rectangle((x - 3, y - 3, x + CELL + 2, y + CELL + 2), outline=outline[0], width=3)
        draw.text((x + 2, y + CELL + 3), _fit(draw, line1, font), fill="black", font=font)
        draw.text((x + 2, y + CELL + 19), _fit(draw, line2, font), fill="#555", font=font)
    return sheet


def key_labels(metadata: dict, n: int = 2, max_len: int = 18) -> str:
    """The first few short label values of an item ("Shirts Navy Blue"), for captions."""
    values = [str(v) for v in metadata.values() if v not in (None, "") and len(str(v)) <= max_len]
    return " ".join(values[:n])


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> str:
    """Shorten text with an ellipsis so it fits under one cell."""
    if draw.textlength(text, font=font) <= CELL - 4:
        return text
    while text and draw.textlength(text + "…", font=font) > CELL - 4:
        text = text[:-1]
    return text + "…"


def results_sheet(collection: Collection, hits: Sequence[SearchHit], out_path: Path, *,
                  query_image: Path | None = None, query_item: str | None = None,
                  query_text: str | None = None) -> Path:
    """The contact sheet of a search: the query (an image file, an indexed item, or the words of a
    text query as the first caption), then each hit with its id, score and main labels."""
    query, caption = None, query_text or "query"
    if query_image is not None:
        query = decode_image(query_image.read_bytes(), source=str(query_image))
        caption = query_image.name
    elif query_item is not None:
        query = load_source_image(collection.get(query_item).source)
        caption = query_item
    cells = [(load_source_image(h.source), f"{h.id}  {h.score:.3f}", key_labels(h.metadata)) for h in hits]
    if query is None and query_text:  # words: the first cell says them
        cells = [(None, f'"{query_text}"', "text query", "#d62728"), *cells]
    return contact_sheet(query, cells, out_path, query_caption=caption)


def look_sheet(collection: Collection, photo: Path | None, regions: Sequence[RegionHits], out_path: Path) -> Path:
    """Shop the look as a picture: the photo with each region's box drawn and named, then one row
    per region, its cut-out first and its results after it."""
    if photo is None:
        raise VestisError("a region sheet needs the query photo")
    image = decode_image(photo.read_bytes(), source=str(photo)).convert("RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, image.height // 30))
    width = max(2, image.height // 150)
    for found, colour in zip(regions, _BOX_COLOURS * len(regions)):
        draw.rectangle(found.region.box, outline=colour, width=width)
        draw.text((found.region.box[0] + width + 2, found.region.box[1] + width), found.region.name, fill=colour,
                  font=font)
    scale = min(1.0, 2 * CELL / image.height)
    parts = [image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))]
    for found in regions:
        cells = [(load_source_image(h.source), f"{h.id}  {h.score:.3f}", key_labels(h.metadata))
                 for h in found.response.hits]
        parts.append(sheet_image(found.region.image, cells, columns=len(cells) + 1, query_caption=found.region.name))
    if not regions:
        parts.append(sheet_image(None, [(None, "no person found", "the whole photo is searched")]))
    sheet = Image.new("RGB", (max(p.width for p in parts) + 2 * PAD, sum(p.height + PAD for p in parts) + PAD),
                      "#f4f4f4")
    y = PAD
    for part in parts:
        sheet.paste(part, (PAD, y))
        y += part.height + PAD
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path)
    return out_path

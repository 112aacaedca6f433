"""Contact sheets: the query image, then the results with id and score under each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from vestis.data.images import decode_image
from vestis.data.sources import read_source
from vestis.errors import VestisError
from vestis.search.results import SearchHit
from vestis.store.collection import Collection

CELL = 160
CAPTION = 40
PAD = 8


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


def contact_sheet(
    query: Image.Image | None,
    results: Sequence[tuple[Image.Image | None, str, str] | tuple[Image.Image | None, str, str, str]],
    out_path: Path,
    *,
    columns: int = 6,
    query_caption: str = "query",
) -> Path:
    """Write a PNG grid: the query first (outlined in red), then each result as (image, line 1,
    line 2[, outline colour]) — evaluation grids outline relevant results green, others grey."""
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
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path)
    return out_path


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
                  query_image: Path | None = None, query_item: str | None = None) -> Path:
    """The contact sheet of a search: the query (an image file or an indexed item), then each hit
    with its id, score and main labels."""
    if query_image is not None:
        query = decode_image(query_image.read_bytes(), source=str(query_image))
        caption = query_image.name
    else:
        query = load_source_image(collection.get(str(query_item)).source)
        caption = str(query_item)
    cells = [(load_source_image(h.source), f"{h.id}  {h.score:.3f}", key_labels(h.metadata)) for h in hits]
    return contact_sheet(query, cells, out_path, query_caption=caption)

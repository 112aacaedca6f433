"""`vestis search`: one query model (image, item, words, attributes, regions) from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vestis.cli.common import CollectionOpt, app, console, fail, parse_filters


@app.command("search")
def search_cmd(
    collection: CollectionOpt,
    image: Annotated[Path | None, typer.Argument(help="Query image file.")] = None,
    item_ids: Annotated[list[str] | None, typer.Option(
        "--id", help="Search with an indexed item (more like this); repeat for several, WEIGHT:ID to weigh.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Search in words (alone, or with an image or --id).")] = None,
    negatives: Annotated[list[str] | None, typer.Option(
        "--not", help="Less like this: an item id or image file (repeatable, WEIGHT: prefix allowed).")] = None,
    mode: Annotated[str | None, typer.Option(
        help="Text search: keyword, vector or hybrid (default: hybrid with a joint model, else keyword).")] = None,
    text_weight: Annotated[float | None, typer.Option(
        help="Share of the text in a query that combines text with images or items (0..1; default: "
             "0.2 in hybrid mode, 0.6 in vector mode, chosen by `vestis eval --text`).")] = None,
    region: Annotated[str | None, typer.Option(
        "--region", "--regions", help="A photo of a person: 'auto' searches each garment region found (top, "
        "bottom, shoes, person), a region name that one, 'none' the whole photo (the default).")] = None,
    region_scope: Annotated[bool, typer.Option(
        "--region-scope/--no-region-scope", help="A region searches its part of the catalogue (footwear for "
        "shoes) where the labels name it.")] = True,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
    offset: Annotated[int, typer.Option(help="Skip this many results (paging).")] = 0,
    filter: Annotated[list[str] | None, typer.Option("--filter", help="Metadata filter key=value (repeatable).")] = None,
    color_weight: Annotated[float, typer.Option("--color-weight", help="Weight of colour similarity.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print results and timings as JSON.")] = False,
    grid: Annotated[Path | None, typer.Option(help="Write a contact sheet PNG of the results.")] = None,
    attrs: Annotated[str | None, typer.Option(
        "--attrs", help="Search by attributes, e.g. 'sleeve length; colour:2' (needs an attribute index)."
    )] = None,
    synonyms: Annotated[Path | None, typer.Option(
        "--synonyms", help="Store these synonyms with the collection first (as `vestis text synonyms`), then "
        "search with them.")] = None,
) -> None:
    """Find the items most similar to a query image or an indexed item (in the given attributes, or
    per garment region of a photo of a person), or search in words, alone or combined with images
    and items (more like these, less like those)."""
    from vestis.search.engine import Engine
    from vestis.search.query import QueryError, SearchQuery, parse_weighted

    ids = item_ids or []
    try:
        negative_files = [(w, _read_image_file(Path(v))) for w, v in map(parse_weighted, negatives or [])
                          if Path(v).is_file()]
        query = SearchQuery(
            image=_read_image_file(image) if image is not None else None, image_name=str(image or "query"),
            item_id=ids[0] if ids else None, positive=ids[1:], text=text,
            negative=[n for n in negatives or [] if not Path(parse_weighted(n)[1]).is_file()],
            negative_images=negative_files, mode=mode, text_weight=text_weight, attrs=attrs, region=region,
            region_scope=region_scope, filters=parse_filters(filter or []), k=k, offset=offset,
            color_weight=color_weight)
    except QueryError as e:
        fail(str(e))
    own_synonyms = None
    if synonyms is not None:
        from vestis.data.vocabulary import read_synonyms

        own_synonyms = read_synonyms(synonyms)
    started = time.perf_counter()
    with Engine.open(collection) as engine:
        if own_synonyms is not None:
            from vestis.store.keyword_index import save_synonyms

            save_synonyms(engine.collection, own_synonyms, synonyms.name)
        timings = engine.load(model=image is not None)
        outcome = engine.run(query, timings=timings)
        timings["total"] = (time.perf_counter() - started) * 1000
        if grid is not None:
            from vestis.search.grid import look_sheet, results_sheet

            if outcome.regions is not None:
                look_sheet(engine.collection, image, outcome.regions, grid)
            else:
                results_sheet(engine.collection, outcome.response.hits, grid, query_image=image,
                              query_item=query.item_id, query_text=text)
    response, understood = outcome.response, outcome.understood
    if as_json:
        print(json.dumps({**response.as_dict(),
                          **({"understood": [m.as_dict() for m in understood.matches]} if understood else {}),
                          **({"rewritten": understood.rewrite.as_dict()} if understood and understood.rewrite else {}),
                          **({"regions": [r.as_dict() for r in outcome.regions]}
                             if outcome.regions is not None else {})}, indent=2, ensure_ascii=False))
        return
    if understood:
        console.print(f"understood: {understood.describe()}")
    if outcome.regions is not None:
        if not outcome.regions:
            console.print("no person found in the photo: the whole photo was searched")
        for found in outcome.regions:
            scope = "; ".join(f"{c}={', '.join(v)}" for c, v in found.scope.items())
            console.print(f"[bold]{found.region.name}[/] box {found.region.box} (score {found.region.score:.2f})"
                          + (f", searched in {scope}" if scope else ""))
            _print_hits(found.response, offset)
        if query.region_mode != "auto":
            return
        console.print("[bold]whole photo[/]")
    _print_hits(response, offset)
    if grid is not None:
        console.print(f"contact sheet written to {grid}")


def _read_image_file(path: Path) -> bytes:
    """A query image file's bytes; one over the image size limit is refused from its size, unread."""
    from vestis.data.sources import MAX_SOURCE_BYTES

    if not path.is_file():
        fail(f"no such image file: {path}")
    if (size := path.stat().st_size) > MAX_SOURCE_BYTES:
        fail(f"{path} is {size:,} bytes; the limit for an image is {MAX_SOURCE_BYTES:,} bytes")
    return path.read_bytes()


def _print_hits(response, offset: int) -> None:  # noqa: ANN001 - a SearchResponse, imported lazily
    """The results as a table on stdout, and the timings on stderr."""
    table = Table(title=f"top {len(response.hits)} of {response.candidates}")
    table.add_column("#", justify="right")
    table.add_column("id")
    table.add_column("score", justify="right")
    table.add_column("labels")
    for rank, hit in enumerate(response.hits, start=offset + 1):
        labels = ", ".join(f"{v}" for key, v in hit.metadata.items() if key not in ("productDisplayName",))
        table.add_row(str(rank), hit.id, f"{hit.score:.4f}", labels[:80])
    Console().print(table)
    console.print(" ".join(f"{key}={value:.1f}ms" for key, value in response.timings_ms.items()))


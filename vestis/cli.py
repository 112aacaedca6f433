"""The `vestis` command line: thin typer commands over the library layers."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vestis.errors import VestisError

app = typer.Typer(
    help="vestis: fashion image retrieval. Index a clothing catalogue, then search it by image.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

CollectionOpt = Annotated[Path, typer.Option("--collection", "-c", help=(
    "Collection: a directory, milvus://HOST:PORT/NAME (credentials from MILVUS_TOKEN or MILVUS_USER/"
    "MILVUS_PASSWORD) or milvus-lite:FILE.db."))]


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _finite(value: float | None) -> float | None:
    """Typer callback: refuse nan and inf, which float options otherwise accept."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number (got {value})")
    return value


def _parse_filters(filters: list[str]) -> dict[str, list[str]]:
    """`key=value` pairs; the same key twice means either value, different keys must all match."""
    out: dict[str, list[str]] = {}
    for f in filters:
        if "=" not in f:
            _fail(f"--filter takes key=value (got {f!r})")
        key, value = f.split("=", 1)
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@app.command("index")
def index_cmd(
    source: Annotated[str, typer.Argument(help="A folder, a zip archive, or a dataset name (fashion-mnist).")],
    collection: CollectionOpt,
    format: Annotated[str | None, typer.Option("--format", "-f", help="Catalogue format (auto-detected).")] = None,
    encoder: Annotated[str | None, typer.Option(help="Encoder name or path to an .onnx model.")] = None,
    index: Annotated[str | None, typer.Option("--index", help=(
        "Index spec, e.g. exact, hnsw, ivf:nprobe=16. New collections default to auto: exact search while "
        "small, HNSW above (`vestis info` shows the choice)."))] = None,
    limit: Annotated[int | None, typer.Option(help="Index only the first N items (Fashion-MNIST: per split).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 32,
    keep_missing: Annotated[bool, typer.Option(help="Keep items whose image left the source.")] = False,
    attribute_model: Annotated[Path | None, typer.Option(
        help="Attribute model (.onnx from `vestis train`) to embed the items for attribute search with "
        "(default: the collection's, if it has one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    metadata: Annotated[Path | None, typer.Option(
        "--metadata", help="Label table (CSV or JSONL) with an id or path column, for a folder or zip "
        "(default: its metadata.csv, labels.csv or metadata.jsonl).")] = None,
    no_wait: Annotated[bool, typer.Option(
        "--no-wait", help="Fail at once when another `vestis index` is writing the collection (default: wait).")
    ] = False,
    ray: Annotated[str | None, typer.Option("--ray", help=(
        "Embed on a Ray cluster: 'auto' (the cluster this machine belongs to, else a local one) or its "
        "address; the catalogue must be readable at the same path on every node."))] = None,
    ray_actors: Annotated[int | None, typer.Option(help="Encoder actors on Ray (default: one per CPU).")] = None,
    crop: Annotated[str | None, typer.Option(help=(
        "Photos of people (user uploads, lookbooks): index each by one garment region, top, bottom, shoes or "
        "person, cut out like a catalogue photo (a photo without it stays whole). Recorded with the "
        "collection, so later runs and uploads are cut the same way."))] = None,
    skip_duplicates: Annotated[bool, typer.Option(
        "--skip-duplicates", help="Leave out new images that duplicate a stored item (see `vestis duplicates`), "
        "and list them.")] = False,
    duplicate_threshold: Annotated[float | None, typer.Option(
        help="With --skip-duplicates: the similarity from which an image is a duplicate (default: as `vestis "
        "duplicates`).")] = None,
) -> None:
    """Build or update a collection from a catalogue: embeds only new or changed images.

    One `vestis index` writes a collection at a time: a second one waits for the first (or, with
    --no-wait, stops) and then embeds only what the first did not."""
    from vestis.data import open_catalogue
    from vestis.encoders import DEFAULT_ENCODER, get_encoder
    from vestis.search.duplicates import DEFAULT_THRESHOLD
    from vestis.search.engine import Engine
    from vestis.search.opening import open_collection_encoder
    from vestis.store.factory import collection_exists, open_collection
    from vestis.store.guards import disk_full_errors, indexing_lock
    from vestis.store.ingest import open_or_create
    from vestis.store.location import parse_location

    options = {"limit": limit} if limit else {}
    if metadata is not None:
        options["metadata"] = metadata
    catalogue = open_catalogue(source, format, **options)
    embed = None
    if ray is not None:
        from vestis.store.ray_ingest import RayEmbedder

        embed = RayEmbedder(address=ray, actors=ray_actors)
    local_files = parse_location(collection).files  # the folder (a Milvus collection's side files)
    with indexing_lock(local_files, wait=not no_wait, notify=console.print), disk_full_errors(local_files):
        if encoder is None and collection_exists(collection):
            with open_collection(collection) as existing:
                enc = open_collection_encoder(existing)
        else:
            enc = get_encoder(encoder or DEFAULT_ENCODER)
        console.print(f"indexing [bold]{catalogue.format}[/] catalogue {catalogue.root} with {enc.name} "
                      f"into {collection}")
        with Engine(open_or_create(collection, enc, index), encoder=enc) as engine:
            report, attributes, whole = engine.index(catalogue, batch_size=batch_size,
                                                     remove_missing=not keep_missing, progress=not as_json,
                                                     attribute_model=attribute_model, embed=embed, crop=crop,
                                                     skip_duplicates=(duplicate_threshold or DEFAULT_THRESHOLD)
                                                     if skip_duplicates else None)
            total = len(engine.collection)
    if as_json:
        extra = {"attributes": attributes.as_dict()} if attributes else {}
        if crop or whole:
            extra["indexed_whole"] = whole  # photos in which the --crop region was not found
        print(json.dumps({**report.as_dict(), **extra}, indent=2))
        return
    for item_id, src, reason in report.failures[:20]:
        console.print(f"[yellow]skipped[/] {item_id} ({src}): {reason}")
    if len(report.failures) > 20:
        console.print(f"[yellow]... and {len(report.failures) - 20} more skipped[/]")
    console.print(
        f"[green]done[/] in {report.seconds:.1f}s: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.removed} removed, {len(report.failures)} skipped"
        + (f", {report.reused} took the stored vectors of identical images" if report.reused else "")
        + (f", {report.images_per_second:.0f} images/s" if report.embedded else "")
        + f"; collection holds {total} items"
    )
    if attributes:
        console.print(f"attribute vectors: {attributes.embedded} item(s) embedded in {attributes.seconds:.1f}s")
    if whole:
        console.print(f"[yellow]{whole} photo(s)[/] showed no region to crop: indexed whole")
    for item_id, src, of, score in report.duplicates[:20]:
        console.print(f"[yellow]duplicate[/] {item_id} ({src}) of {of} ({score:.3f}): not added", highlight=False)
    if len(report.duplicates) > 20:
        console.print(f"[yellow]... and {len(report.duplicates) - 20} more duplicates not added[/] (--json lists them)")


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
            region_scope=region_scope, filters=_parse_filters(filter or []), k=k, offset=offset,
            color_weight=color_weight)
    except QueryError as e:
        _fail(str(e))
    started = time.perf_counter()
    with Engine.open(collection) as engine:
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
        _fail(f"no such image file: {path}")
    if (size := path.stat().st_size) > MAX_SOURCE_BYTES:
        _fail(f"{path} is {size:,} bytes; the limit for an image is {MAX_SOURCE_BYTES:,} bytes")
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


@app.command("info")
def info_cmd(
    collection: CollectionOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Describe a collection: size, encoder, index, metadata columns."""
    from vestis.store.factory import open_collection

    info = open_collection(collection).info()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(show_header=False, title=str(collection))
    for key, value in info.items():
        if key == "catalogues":
            value = "; ".join(f"{c['catalogue']} ({c['items']})" for c in value)
        elif key == "metadata_columns":
            value = ", ".join(value)
        elif key == "disk_bytes" and value is not None:  # None: a Milvus server's storage
            value = f"{value / 1e6:.1f} MB"
        table.add_row(key, str(value))
    Console().print(table)


@app.command("remove")
def remove_cmd(
    item_ids: Annotated[list[str], typer.Argument(help="Item ids to remove.")],
    collection: CollectionOpt,
) -> None:
    """Remove items from a collection (its index is updated, not rebuilt)."""
    from vestis.search.engine import Engine
    from vestis.store.guards import DiskFullError, disk_full_errors
    from vestis.store.location import parse_location

    with Engine.open(collection) as engine:
        missing = [i for i in item_ids if i not in engine.collection]
        removed = engine.remove(item_ids)
        try:  # the removal is committed: the derived files only make the next start fast
            with disk_full_errors(parse_location(collection).files, "the next command brings the search files "
                                  "up to date (the removal itself is saved)"):
                engine.persist()
        except DiskFullError as e:
            console.print(f"[yellow]warning:[/] {escape(str(e))}", soft_wrap=True, highlight=False)
        total = len(engine.collection)
    for i in missing:
        console.print(f"[yellow]not in collection:[/] {i}")
    console.print(f"removed {removed} item(s); collection holds {total} items")


@app.command("duplicates")
def duplicates_cmd(
    collection: CollectionOpt,
    threshold: Annotated[float | None, typer.Option(help=(
        "Cosine similarity from which two items are duplicates (0.5..1; default: chosen on altered copies, "
        "see BENCHMARKS.md)."))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the groups and their pairs as JSON.")] = False,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write the pairs (group, a, b, score) as CSV.")] = None,
    grid: Annotated[Path | None, typer.Option(help="Write a contact sheet per group into this folder.")] = None,
    most: Annotated[int, typer.Option(help="Groups shown and drawn at most.", min=1)] = 50,
) -> None:
    """Groups of near-duplicate items (re-shot, resized, re-encoded, mirrored, lightly cropped): each
    item is compared with its nearest neighbours through the collection's own index."""
    from tqdm import tqdm

    from vestis.search.duplicates import DEFAULT_THRESHOLD, find_duplicates
    from vestis.store.factory import open_collection

    with open_collection(collection) as coll, tqdm(unit="item", desc="near-duplicates",
                                                   disable=True if as_json else None) as bar:
        report = find_duplicates(coll, DEFAULT_THRESHOLD if threshold is None else threshold,
                                 progress=lambda done, total: _advance(bar, done, total))
        if grid is not None:
            from vestis.search.grid import contact_sheet, load_source_image

            for n, group in enumerate(report.groups[:most], start=1):
                best = {i: max(s for a, b, s in group.pairs if i in (a, b)) for i in group.ids}
                cells = [(load_source_image(coll.get(i).source), i, f"best pair {best[i]:.3f}") for i in group.ids]
                contact_sheet(None, cells, grid / f"group-{n:03d}.png")
    if csv_out is not None:
        import csv

        csv_out.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_out, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["group", "a", "b", "score"])
            group_of = {i: n for n, g in enumerate(report.groups, 1) for i in g.ids}
            writer.writerows((group_of.get(a) if group_of.get(a) == group_of.get(b) else "", a, b, f"{s:.6f}")
                             for a, b, s in report.pairs_found)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        return
    console.print(f"{len(report.pairs_found)} near-duplicate pair(s) in {len(report.groups)} group(s) among {report.items:,} "
                  f"items (similarity >= {report.threshold:g}), in {report.seconds:.1f}s")
    for n, group in enumerate(report.groups[:most], start=1):
        console.print(f"{n:>3}. " + ", ".join(group.ids) + f"  (best {group.pairs[0][2]:.3f})", highlight=False)
    if len(report.groups) > most:
        console.print(f"... and {len(report.groups) - most} more groups (--json or --csv lists them all)")
    if grid is not None:
        console.print(f"contact sheets written to {grid}")


@app.command("export")
def export_cmd(
    collection: CollectionOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="The Parquet file to write (ids, labels, sources, "
                                      "vectors as fixed-size lists).")],
) -> None:
    """Write a collection's items, labels and vectors to one Parquet file (pandas, polars, LanceDB,
    Milvus bulk insert read it; `vestis import` makes a collection of it again)."""
    from tqdm import tqdm

    from vestis.store.export import export_collection
    from vestis.store.factory import open_collection
    from vestis.store.guards import disk_full_errors

    with open_collection(collection) as coll, disk_full_errors(out.parent, "export again"), \
            tqdm(unit="item", desc="export") as bar:
        report = export_collection(coll, out, progress=lambda done, total: _advance(bar, done, total))
    console.print(f"[green]done[/]: {report.items:,} items written to {out}")


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="A Parquet file from `vestis export`.")],
    collection: CollectionOpt,
) -> None:
    """Add the items of an exported Parquet file to a collection (made with the file's encoder when
    missing), without reading or embedding any image; the whole file is checked first."""
    from tqdm import tqdm

    from vestis.store.export import import_collection
    from vestis.store.guards import disk_full_errors, indexing_lock
    from vestis.store.location import parse_location

    local_files = parse_location(collection).files
    with indexing_lock(local_files, notify=console.print), disk_full_errors(local_files), \
            tqdm(unit="item", desc="import") as bar:
        report = import_collection(file, collection, progress=lambda done, total: _advance(bar, done, total))
    console.print(f"[green]done[/]: {report.items:,} items imported into {collection}")


def _advance(bar, done: int, total: int) -> None:  # noqa: ANN001 - a tqdm bar, imported lazily
    bar.total = total
    bar.update(done - bar.n)


@app.command("eval")
def eval_cmd(
    collection: CollectionOpt,
    group: Annotated[str | None, typer.Option(help="Label columns that define relevance, e.g. articleType,baseColour.")] = None,
    attributes: Annotated[str | None, typer.Option(
        "--attributes", "--attribute", help="Attribute-specific MAP over these columns (one or more).")] = None,
    k: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "1,10,50",
    split: Annotated[str | None, typer.Option(help="Split of the queries (train/val/test; default: all items).")] = None,
    gallery: Annotated[str | None, typer.Option(help="Splits of the gallery, comma-separated (default: all).")] = None,
    split_file: Annotated[Path | None, typer.Option(help="CSV of id,split (default: created by id, seed 0).")] = None,
    index: Annotated[str | None, typer.Option(help="Rank through this index backend (adds ANN recall@10).")] = None,
    color_weight: Annotated[float, typer.Option("--color-weight", help="Fuse colour similarity with this weight.",
                                                callback=_finite)] = 0.0,
    knn: Annotated[int | None, typer.Option(help="Also report kNN classification accuracy with this K.")] = None,
    skip_unanswerable: Annotated[
        bool, typer.Option(help="Leave out queries with no relevant item (default: they count as misses).")
    ] = False,
    report: Annotated[Path | None, typer.Option(help="Write report.md, metrics.json and plots here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    text: Annotated[bool, typer.Option("--text", help="Text-query protocols (needs a joint text-image model): "
                                       "title retrieval, label queries, composed queries, latency.")] = False,
    transfer: Annotated[Path | None, typer.Option(help="With --text: also query this collection's photos.")] = None,
    min_items: Annotated[int, typer.Option(help="With --text: label pairs with at least this many items are queried.",
                                           min=1)] = 5,
    query_collection: Annotated[str | None, typer.Option(
        "--query-collection", help="Query with this collection's items (e.g. street photos) against --collection "
        "as the gallery; needs --label-map.")] = None,
    label_map: Annotated[Path | None, typer.Option(
        help="With --query-collection: which gallery label values match each query label value (YAML; see "
        "configs/street-to-shop/).")] = None,
    region: Annotated[str, typer.Option(
        help="With --query-collection: also search this garment region of each query photo (top, bottom, shoes, "
        "person), reported beside the whole photo with the change and its 95% interval.")] = "none",
    region_scope: Annotated[bool, typer.Option("--region-scope/--no-region-scope", help=(
        "With --region: search the region's part of the catalogue where its labels name it."))] = True,
    limit: Annotated[int | None, typer.Option(help="With --query-collection: the first N queries only.", min=1)] = None,
) -> None:
    """Measure retrieval quality: mAP@K, P@K, R@K, NDCG@K, attribute MAP, kNN accuracy; text queries;
    one collection's items against another (street to shop)."""
    from vestis.eval.run import EvalConfig, run_eval

    if query_collection is not None:
        _eval_across(collection, query_collection, label_map, region, region_scope, k, limit, as_json, report)
        return

    if text:
        from vestis.eval.text import TextEvalConfig, run_text_eval

        text_cfg = TextEvalConfig(split_file=split_file, transfer=transfer, min_items=min_items)
        if group:
            text_cfg.group = [c.strip() for c in group.split(",") if c.strip()]
        metrics = run_text_eval(collection, text_cfg, report_dir=report, command="vestis " + " ".join(sys.argv[1:]),
                                progress=lambda msg: console.print(f"[dim]{msg}[/]"))
        print(json.dumps(metrics, indent=2, default=str))
        return
    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        _fail(f"--k takes comma-separated integers (got {k!r})")
    split_list = lambda text: [c.strip() for c in text.split(",") if c.strip()] if text else []  # noqa: E731
    cfg = EvalConfig(
        group=split_list(group), attributes=split_list(attributes), ks=ks, queries=split,
        gallery=split_list(gallery) or None, split_file=split_file, index=index, colour_weight=color_weight,
        knn=knn, include_queries_without_relevant=not skip_unanswerable,
    )
    command = "vestis " + " ".join(sys.argv[1:])
    metrics = run_eval(collection, cfg, report_dir=report, command=command)
    if as_json:
        print(json.dumps(metrics, indent=2, default=str))
        return
    table = Table(title=f"{collection} ({metrics['n_queries_total']} queries, gallery {metrics['n_gallery']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
        elif key.startswith(("n_", "attribute_n")) or key in ("index", "encoder"):
            table.add_row(key, str(value))
    for attr, res in metrics.get("attributes", {}).items():
        table.add_row(f"MAP {attr}", f"{res['mAP']:.4f} ({res['n_queries']} queries)")
    Console().print(table)
    if report is not None:
        console.print(f"report written to {report / 'report.md'}")


def _eval_across(gallery: str, queries: str, label_map: Path | None, region: str, region_scope: bool, k: str,
                 limit: int | None, as_json: bool, report: Path | None) -> None:
    from tqdm import tqdm

    from vestis.eval.cross import CrossConfig, evaluate_across

    if label_map is None:
        _fail("--query-collection needs --label-map (which gallery labels match each query label)")
    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        _fail(f"--k takes comma-separated integers (got {k!r})")
    with tqdm(unit="query", desc="street to shop", disable=True if as_json else None) as bar:
        metrics = evaluate_across(gallery, queries, CrossConfig(label_map, region, region_scope, ks, limit),
                                  progress=lambda done, total: _advance(bar, done, total))
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        (report / "metrics.json").write_text(json.dumps({**metrics, "command": "vestis " + " ".join(sys.argv[1:])},
                                                        indent=2, default=str))
    if as_json:
        print(json.dumps(metrics, indent=2, default=str))
        return
    modes = [m for m in ("whole", region) if m in metrics]
    table = Table(title=f"{queries} -> {gallery} ({metrics['n_queries']} queries, gallery {metrics['n_gallery']})")
    table.add_column("metric")
    for mode in modes:
        table.add_column("whole photo" if mode == "whole" else f"{mode} region", justify="right")
    for key in [f"{m}@{x}" for m in ("P", "R", "mAP") for x in ks] + ["query_ms_p50"]:
        table.add_row(key, *(f"{metrics[mode][key]:.4f}" for mode in modes))
    Console().print(table)
    for metric in ("P@10", "mAP@10"):
        if f"{metric}_change" in metrics:
            low, high = metrics[f"{metric}_change_ci95"]
            console.print(f"{metric}: {metrics[f'{metric}_change']:+.1%} with the {region} region "
                          f"(95% CI {low:+.1%} to {high:+.1%}); {metrics['searched_whole']} photo(s) searched whole")


@app.command("serve")
def serve_cmd(
    collection: CollectionOpt,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int | None, typer.Option(help="Inference threads (default: one per core, at most 4).")] = None,
    allow_root: Annotated[
        list[Path] | None, typer.Option("--allow-root", help="Folder /submit may read img_path from (repeatable).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="VESTIS_API_KEY", help="Key required for POST/DELETE /items.")
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload, in MiB.")] = 20.0,
    batch: Annotated[int, typer.Option(
        help="Uploads that arrive together share one encoder run of up to this many images (1: off).")] = 1,
    batch_wait_ms: Annotated[float, typer.Option(help="Longest wait for a batch to fill, in ms.")] = 4.0,
) -> None:
    """Serve the HTTP API (RPF-compatible POST /submit, /search, /items) and the web page at /."""
    import os

    from vestis.api.server import serve

    if api_key is None and os.environ.get("VESTIS_API_KEY") == "":  # click reads an empty variable as unset
        _fail("VESTIS_API_KEY is set but empty: set it to a key, or unset it to serve without authentication")

    serve(
        collection, host=host, port=port, workers=workers, allow_roots=allow_root or None, api_key=api_key,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024), batch=batch, batch_wait_ms=batch_wait_ms,
    )


# ----------------------------------------------------------------- benchmarks
bench_app = typer.Typer(help="Benchmarks: ANN index sweep and end-to-end query latency.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("ann")
def bench_ann_cmd(
    vectors: Annotated[str, typer.Option("--vectors", help="A collection directory, a .npy file, or 'generated'.")],
    out: Annotated[Path, typer.Option(help="Write results.json, results.md and recall_qps.png here.")] = Path("bench-ann"),
    n: Annotated[int | None, typer.Option("--n", help="Vectors to index (generated: required).")] = None,
    dim: Annotated[int | None, typer.Option(help="Dimension of generated vectors without --like.")] = None,
    like: Annotated[str | None, typer.Option(help="Generate vectors shaped like this collection / .npy.")] = None,
    backends: Annotated[str | None, typer.Option(help="Comma-separated backends of the sweep (default: all).")] = None,
    queries: Annotated[int, typer.Option(help="Held-out query vectors.")] = 1000,
    config: Annotated[Path | None, typer.Option(help="Sweep YAML (default: configs/ann-sweep.yaml).")] = None,
    threads: Annotated[int, typer.Option(help="BLAS / OpenMP threads for searches.")] = 1,
    build_threads: Annotated[int | None, typer.Option(help="Threads for builds (default: --threads).")] = None,
    build_budget: Annotated[float | None, typer.Option(help="Seconds a build may take (default: config).")] = None,
    query_budget: Annotated[float | None, typer.Option(help="Seconds per sweep point (default: config).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the query split and the generated vectors.")] = 0,
    cache: Annotated[Path | None, typer.Option(help="Prepared datasets (default: ~/.cache/vestis/bench).")] = None,
) -> None:
    """ANN sweep over every index backend: build time, memory, recall@10, latency p50/p99, throughput."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before FAISS loads OpenMP: idle threads must not spin
    from vestis.bench.ann import BenchSettings, run_ann_bench

    settings = BenchSettings(threads=threads, build_threads=build_threads, backends=[b.strip() for b in backends.split(",")] if backends else None,
                             build_budget_s=build_budget, query_budget_s=query_budget)
    result = run_ann_bench(vectors, out, n=n, dim=dim, queries=queries, like=like, config=config, settings=settings,
                           seed=seed, cache_dir=cache, command="vestis " + " ".join(sys.argv[1:]),
                           log=lambda line: console.print(line, highlight=False, markup=False))
    table = Table(title=f"fastest per backend at recall@10 >= 0.95: {result['dataset']['label']}")
    for column in ("backend", "spec", "recall@10", "p50 ms", "p99 ms", "batch q/s", "memory B/item"):
        table.add_column(column)
    for r in sorted(result["best"].values(), key=lambda r: r["p50_ms"]):
        table.add_row(r["backend"], r["spec"], f"{r['recall']:.3f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
                      f"{r['batch_qps']:.0f}", f"{r['mem_bytes_per_item']:.0f}")
    Console().print(table)
    console.print(f"report: {result['files']['markdown']}, {result['files']['plot']}, {result['files']['json']}")


@bench_app.command("query")
def bench_query_cmd(
    collection: CollectionOpt,
    images: Annotated[list[Path], typer.Argument(help="Query image files, or .zip archives of images.")],
    runs: Annotated[int, typer.Option(help="Timed queries (cycling through the images).")] = 200,
    cold_runs: Annotated[int, typer.Option(help="Fresh `vestis search` processes for the cold start (0: skip).")] = 5,
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Also write query.json and query.md here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """End-to-end query latency split into decode, preprocess, embed, colour, search, fetch; and cold start."""
    from vestis.bench.query import markdown, run_query_bench

    result = run_query_bench(collection, images, runs=runs, cold_runs=cold_runs, k=k,
                             command="vestis " + " ".join(sys.argv[1:]))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "query.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "query.md").write_text(markdown(result))
    print(json.dumps(result, indent=2) if as_json else markdown(result))


# ----------------------------------------------------------------- attribute search
attributes_app = typer.Typer(help="Attribute-aware search: a collection's per-attribute vectors.",
                             no_args_is_help=True)
app.add_typer(attributes_app, name="attributes")


@attributes_app.command("build")
def attributes_build_cmd(
    collection: CollectionOpt,
    model: Annotated[Path, typer.Option("--model", help="Attribute model from `vestis train` (model.onnx).")],
    rebuild: Annotated[bool, typer.Option(help="Drop another model's vectors and embed again.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Embed every item for every attribute of MODEL (only items not embedded yet), for `search --attrs`."""
    from vestis.encoders.attribute_encoder import AttributeEncoder
    from vestis.store.vector_builds import build_attribute_index
    from vestis.store.factory import open_collection

    with open_collection(collection) as coll:
        report = build_attribute_index(coll, AttributeEncoder(model), rebuild=rebuild, batch_size=batch_size,
                                       progress=not as_json)
        total = len(coll)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    for item_id, reason in report.skipped[:20]:
        console.print(f"[yellow]skipped[/] {item_id}: {reason}")
    console.print(f"[green]done[/] in {report.seconds:.1f}s: {report.embedded} item(s) embedded "
                  f"({report.from_cache} from cached features), {len(report.skipped)} skipped; "
                  f"collection holds {total} items")


@attributes_app.command("info")
def attributes_info_cmd(
    collection: CollectionOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """The attribute model of a collection, its attributes and how many items it has embedded."""
    from vestis.store.factory import open_attributes, open_collection

    with open_collection(collection) as coll:
        index = open_attributes(coll)
        if index is None:
            _fail(f"{collection} has no attribute index (build one with `vestis attributes build`)")
        info = index.info()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(show_header=False, title=f"{collection}: attributes")
    for key, value in info.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    Console().print(table)


# ----------------------------------------------------------------- text search
text_app = typer.Typer(help="Search in words: a collection's joint text-image vectors.", no_args_is_help=True)
app.add_typer(text_app, name="text")


@text_app.command("build")
def text_build_cmd(
    collection: CollectionOpt,
    model: Annotated[Path, typer.Option("--model", help="Joint model from `vestis train` (its run folder or "
                                        "joint.json).")],
    rebuild: Annotated[bool, typer.Option(help="Drop another model's vectors and embed again.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Project every item into MODEL's joint text-image space (only items not embedded yet), for `search --text`."""
    from vestis.encoders.joint import JointModel
    from vestis.store.factory import open_collection
    from vestis.store.vector_builds import build_joint_index

    with open_collection(collection) as coll:
        report = build_joint_index(coll, JointModel(model), rebuild=rebuild)
        total = len(coll)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    console.print(f"[green]done[/] in {report.seconds:.1f}s: {report.embedded} item(s) embedded; "
                  f"collection holds {total} items")


@text_app.command("info")
def text_info_cmd(
    collection: CollectionOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """The joint text-image model of a collection and how many items it has embedded."""
    from vestis.store.factory import open_collection, open_joint

    with open_collection(collection) as coll:
        index = open_joint(coll)
        if index is None:
            _fail(f"{collection} has no joint text-image model (add one with `vestis text build`)")
        info = index.info()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(show_header=False, title=f"{collection}: text search")
    for key, value in info.items():
        table.add_row(key, str(value))
    Console().print(table)


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Option("--config", help="Experiment YAML (see configs/).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: head.kind=arcface.")] = None,
    find_lr: Annotated[bool, typer.Option("--find-lr", help="Run the LR range test instead of training.")] = False,
) -> None:
    """Train an embedding head (ArcFace, CE + triplet, classifier) or an attribute-aware model."""
    from vestis.train import train_from_config

    if not config.is_file():
        _fail(f"no such config file: {config}")
    from vestis.train.report import console_table

    summary = train_from_config(config, set_ or [], find_lr=find_lr)
    print(json.dumps(summary, indent=2, default=str))
    table = console_table(summary)
    if table is not None:
        console.print(table)
    for note in summary.get("transfer_skipped", []):
        console.print(f"[yellow]note:[/] {note}")
    for warning in summary.get("transfer_warnings", []):
        console.print(f"[bold red]WARNING:[/] {warning}")


def main() -> None:
    """Entry point: user errors print a clear message and exit 2, without a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The handler filters too: a library that lowers its own logger's level (bm25s sets DEBUG on
    # import) would otherwise print its debug lines.
    logging.getLogger().handlers[0].setLevel(logging.WARNING)
    try:
        app()
    except VestisError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except (sqlite3.OperationalError, OSError) as exc:  # a full disk in a command without its own check
        from vestis.store.guards import is_disk_full

        if not is_disk_full(exc, "."):
            raise
        console.print(f"[bold red]error:[/] the disk is full ({escape(str(exc))}); free some space and run the "
                      "command again (collections keep everything committed before the error)",
                      soft_wrap=True, highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()

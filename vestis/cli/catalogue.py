"""Commands that look after a collection: info, remove, duplicates, export, import, reindex."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vestis.cli.common import CollectionOpt, advance, app, console, fail


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
        "Similarity (deep cosine fused with colour, 0.5..1) from which two items are duplicates on it alone; "
        "from 0.86 up, a pair also counts when the photos' small grayscale thumbnails agree (resized and "
        "re-encoded copies). Default: chosen on altered copies, see BENCHMARKS.md."))] = None,
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
                                 progress=lambda done, total: advance(bar, done, total))
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
        report = export_collection(coll, out, progress=lambda done, total: advance(bar, done, total))
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
        report = import_collection(file, collection, progress=lambda done, total: advance(bar, done, total))
    console.print(f"[green]done[/]: {report.items:,} items imported into {collection}")



@app.command("reindex")
def reindex_cmd(
    collection: CollectionOpt,
    encoder: Annotated[str | None, typer.Option(help="The new encoder: a built-in name or an .onnx model.")] = None,
    model: Annotated[Path | None, typer.Option(help="The new encoder from `vestis train`: its run folder "
                                               "(model.onnx inside) or the .onnx file.")] = None,
    keep_old: Annotated[bool, typer.Option("--keep-old", help="Keep the old vectors for --rollback.")] = False,
    rollback: Annotated[bool, typer.Option("--rollback", help="Switch back to the vectors --keep-old kept.")] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Re-embed every item with another encoder beside the vectors in use, then switch to it in one
    step: searches and a running server answer from the old vectors until then. Killed, it resumes."""
    from vestis.encoders import get_encoder
    from vestis.search.engine import Engine
    from vestis.store import reindex as reindexing
    from vestis.store.factory import open_attributes, open_joint

    if sum([encoder is not None, model is not None, rollback]) != 1:
        fail("give one of --encoder, --model or --rollback")
    with Engine.open(collection) as engine:
        crop = engine.crop()
        # per-item vectors of other models: kept (their models embed their own queries), but new
        # items get them only from models made on the new encoder
        others = [(what, hint) for store, what, hint in [
            (open_attributes(engine.collection), "attribute", "vestis attributes build --rebuild"),
            (open_joint(engine.collection), "text-image", "vestis text build --rebuild")] if store is not None]
        if rollback:
            report = reindexing.rollback(engine.collection, keep_old=keep_old, batch_size=batch_size,
                                         progress=not as_json, transform=crop)
        else:
            source = str(model / "model.onnx" if model is not None and model.is_dir() else model or encoder)
            report = reindexing.reindex(engine.collection, get_encoder(source), keep_old=keep_old,
                                        batch_size=batch_size, progress=not as_json, transform=crop)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    console.print(f"[green]switched[/] {collection} to {report.encoder} in {report.seconds:.1f}s: {report.items:,} "
                  f"items, {report.embedded:,} embedded now" + (f", {report.resumed:,} by an earlier run"
                                                                if report.resumed else "")
                  + ("; the old vectors are kept for --rollback" if report.kept_old else ""), highlight=False)
    for what, hint in others:
        console.print(f"[yellow]note[/]: the collection's {what} vectors still search, but items added from "
                      f"now on get them only from a model made on the new encoder (`{hint} --model ...`)",
                      highlight=False)

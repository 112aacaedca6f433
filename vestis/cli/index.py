"""`vestis index`: build or update a collection from a catalogue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vestis.cli.common import CollectionOpt, app, console


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
    synonyms: Annotated[Path | None, typer.Option(
        "--synonyms", help="The catalogue's own synonyms for word search (Solr format: 'tee, tshirt' or "
        "'kicks => sneakers'), added to the shipped vocabulary and stored with the collection.")] = None,
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

    from vestis.data.vocabulary import Vocabulary, parse, read_synonyms, shipped_entries

    own_synonyms = read_synonyms(synonyms) if synonyms is not None else None
    if own_synonyms is not None:  # checked before anything is written: a bad file leaves the collection as it was
        Vocabulary.from_entries(shipped_entries(), parse(own_synonyms, synonyms.name))
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
            if own_synonyms is not None:
                from vestis.store.keyword_index import save_synonyms

                save_synonyms(engine.collection, own_synonyms, synonyms.name)
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


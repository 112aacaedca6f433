"""`vestis attributes`: a collection's per-attribute vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vestis.cli.common import CollectionOpt, app, console, fail

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
    from vestis.store.factory import open_collection
    from vestis.store.vector_builds import build_attribute_index

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
            fail(f"{collection} has no attribute index (build one with `vestis attributes build`)")
        info = index.info()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(show_header=False, title=f"{collection}: attributes")
    for key, value in info.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    Console().print(table)


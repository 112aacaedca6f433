"""`vestis text`: a collection's joint text-image vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vestis.cli.common import CollectionOpt, app, console, fail

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


@text_app.command("synonyms")
def text_synonyms_cmd(
    file: Annotated[Path, typer.Argument(help="Synonyms, Solr format: 'tee, tshirt' (two-way, the first is the "
                                         "catalogue's word) or 'kicks => sneakers' (one-way); # for notes.")],
    collection: CollectionOpt,
) -> None:
    """Store the catalogue's own synonyms with the collection (added to the shipped vocabulary; a word on
    the left of one of its entries replaces the shipped entries of that word). Checked whole first."""
    from vestis.data.vocabulary import read_synonyms
    from vestis.store.factory import open_collection
    from vestis.store.keyword_index import save_synonyms

    data = read_synonyms(file)
    with open_collection(collection) as coll:
        done = save_synonyms(coll, data, file.name)
    console.print(f"[green]stored[/] {done['entries']} synonym entries with {collection}")


@text_app.command("info")
def text_info_cmd(
    collection: CollectionOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """The joint text-image model of a collection, how many items it has embedded, and its vocabulary."""
    from vestis.store.factory import open_collection, open_joint
    from vestis.store.keyword_index import vocabulary_info

    with open_collection(collection) as coll:
        index = open_joint(coll)
        if index is None:
            fail(f"{collection} has no joint text-image model (add one with `vestis text build`)")
        info = {**index.info(), **vocabulary_info(coll)}
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(show_header=False, title=f"{collection}: text search")
    for key, value in info.items():
        table.add_row(key, str(value))
    Console().print(table)


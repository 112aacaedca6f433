"""`vestis train`: training runs from a config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vestis.cli.common import app, console, fail


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Option("--config", help="Experiment YAML (see configs/).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: head.kind=arcface.")] = None,
    find_lr: Annotated[bool, typer.Option("--find-lr", help="Run the LR range test instead of training.")] = False,
) -> None:
    """Train an embedding head (ArcFace, CE + triplet, classifier) or an attribute-aware model."""
    from vestis.train import train_from_config

    if not config.is_file():
        fail(f"no such config file: {config}")
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


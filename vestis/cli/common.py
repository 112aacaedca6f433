"""What every command shares: the typer app, the console, the collection option, the error exit
and the entry point."""

from __future__ import annotations

import logging
import math
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from vestis.errors import VestisError

app = typer.Typer(
    help="vestis: fashion image retrieval. Index a clothing catalogue, then search it by image.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
console = Console(stderr=True)

CollectionOpt = Annotated[Path, typer.Option("--collection", "-c", help=(
    "Collection: a directory, milvus://HOST:PORT/NAME (credentials from MILVUS_TOKEN or MILVUS_USER/"
    "MILVUS_PASSWORD) or milvus-lite:FILE.db."))]


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def finite(value: float | None) -> float | None:
    """Typer callback: refuse nan and inf, which float options otherwise accept."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number (got {value})")
    return value


def parse_filters(filters: list[str]) -> dict[str, list[str]]:
    """`key=value` pairs; the same key twice means either value, different keys must all match."""
    out: dict[str, list[str]] = {}
    for f in filters:
        if "=" not in f:
            fail(f"--filter takes key=value (got {f!r})")
        key, value = f.split("=", 1)
        out.setdefault(key.strip(), []).append(value.strip())
    return out




def advance(bar, done: int, total: int) -> None:  # noqa: ANN001 - a tqdm bar, imported lazily
    bar.total = total
    bar.update(done - bar.n)



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


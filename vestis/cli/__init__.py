"""The `vestis` command line: thin typer commands over the library layers, one module per job.

Importing a command module registers its commands on `app`, in the order of `vestis --help`."""

# isort: off
from vestis.cli import index, search, catalogue, evaluate, serve, bench, attributes, text, train  # noqa: F401
# isort: on
from vestis.cli.common import app, main

__all__ = ["app", "main"]

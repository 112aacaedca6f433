"""Where a collection lives, from the ``--collection`` text: a directory, a Milvus server, or Milvus Lite.

- ``DIR``: the local collection (SQLite + vector cache + FAISS index), the default;
- ``milvus://HOST:PORT/NAME``: a Milvus server or cluster; credentials come from the environment
  (``MILVUS_TOKEN``, or ``MILVUS_USER`` and ``MILVUS_PASSWORD``), never from the command line;
  ``milvus+https://`` connects over TLS;
- ``milvus-lite:PATH.db``: Milvus Lite, the embedded Milvus in one file (development and tests).

Files a Milvus collection keeps beside its data (saved splits, the attribute model, uploads of the
API, the training feature cache) go to a local folder: ``PATH.files/`` for Milvus Lite, and
``$VESTIS_MILVUS_FILES/NAME`` (default ``~/.cache/vestis/milvus/HOST_PORT/NAME``) for a server;
replicas of ``vestis serve`` share it through a common mount.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vestis.errors import VestisError

LITE_PREFIX = "milvus-lite:"
DEFAULT_LITE_NAME = "vestis"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
# Path() collapses "milvus://h:p/n" to "milvus:/h:p/n": both spellings are accepted.
_SERVER = re.compile(r"^milvus(?P<tls>\+https)?:/{1,2}(?P<host>[^/\s@]+):(?P<port>\d{1,5})/(?P<name>[^/\s]+)/?$")


@dataclass(frozen=True)
class Location:
    """A parsed collection location. ``kind`` is ``local``, ``milvus`` or ``milvus-lite``; ``uri``
    is what :class:`pymilvus.MilvusClient` connects to; ``files`` is the local folder of side files."""

    kind: str
    text: str
    uri: str = ""
    name: str = ""
    files: Path | None = None

    @property
    def is_milvus(self) -> bool:
        return self.kind != "local"

    def __str__(self) -> str:
        return self.text


def parse_location(raw: str | Path) -> Location:
    """The location named by ``raw`` (see the module docstring); a malformed Milvus one is an error."""
    text = str(raw)
    if text.startswith(LITE_PREFIX):
        path = text[len(LITE_PREFIX):]
        if not path:
            raise VestisError("milvus-lite: needs a file, e.g. --collection milvus-lite:shop.db")
        db = Path(path).expanduser().resolve()
        return Location("milvus-lite", text, uri=str(db), name=DEFAULT_LITE_NAME,
                        files=db.with_name(db.name + ".files"))
    if text.startswith("milvus"):
        m = _SERVER.match(text)
        if m is None:
            shown = text.replace(":/", "://", 1) if text.startswith("milvus:/") and "://" not in text else text
            raise VestisError(f"cannot read the collection location {shown!r}: write milvus://HOST:PORT/NAME "
                              "(or milvus-lite:PATH.db for Milvus Lite)")
        name = m["name"]
        if not _NAME.match(name):
            raise VestisError(f"Milvus collection name {name!r} must start with a letter or '_' and hold only "
                              "letters, digits and '_'")
        scheme = "https" if m["tls"] else "http"
        host, port = m["host"], int(m["port"])
        base = os.environ.get("VESTIS_MILVUS_FILES")
        files = (Path(base).expanduser() if base else
                 Path(os.environ.get("VESTIS_CACHE_DIR", "~/.cache/vestis")).expanduser() / "milvus"
                 / f"{host}_{port}") / name
        return Location("milvus", f"milvus{m['tls'] or ''}://{host}:{port}/{name}",
                        uri=f"{scheme}://{host}:{port}", name=name, files=files)
    return Location("local", text, files=Path(text))


def milvus_credentials() -> dict[str, str]:
    """The token (or user and password) for a Milvus server, from the environment."""
    token = os.environ.get("MILVUS_TOKEN")
    if token:
        return {"token": token}
    user, password = os.environ.get("MILVUS_USER"), os.environ.get("MILVUS_PASSWORD")
    if user:
        return {"user": user, "password": password or ""}
    return {}

"""Modules imported on first use, so that a command pays only for the libraries it touches."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """Module ``name``, executed on its first attribute access (``importlib.util.LazyLoader``).

    For heavy libraries that some code paths of a module need and others do not (a collection
    searched exactly never touches FAISS). A missing module still fails here, at import time.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module

"""vestis: fashion image retrieval (index, search, train, evaluate, serve)."""

__version__ = "0.1.0"

"""Queries: by image, by item and by attributes, with filters and colour fusion; the engine that
the CLI, the API and the benchmarks share (:class:`vestis.search.engine.Engine`)."""

"""The on-disk collection: SQLite (the source of truth), the vector table and its cache, the ANN
index files, the attribute vectors, the feature cache, and incremental ingest."""

"""Benchmarks that ship with vestis: the ANN index sweep (``vestis bench ann``), generated vectors
shaped like a collection's, and the end-to-end query latency (``vestis bench query``)."""

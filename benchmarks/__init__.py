"""Ingest and query benchmarks for sim_schema (run with `python -m benchmarks.run`)."""

"""Benchmarks that print numbers: `python -m bench.<name>` from the repository root (see
bench/README.md). What they share is in `bench.harness`."""

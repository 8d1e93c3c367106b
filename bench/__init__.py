"""Benchmark of the mirror against nginx, distribution and the upstream (see bench/README.md)."""

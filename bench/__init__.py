"""Benchmarks and evaluations, run against the real stack (see docs/benchmarks.md)."""

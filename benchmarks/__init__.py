"""Benchmark scripts: each writes JSON to benchmarks/results/."""

"""Generators of example input data (for documentation, tests and benchmarks)."""

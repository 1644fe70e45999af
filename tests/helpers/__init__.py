"""Importable helpers of the test suite (tests/ is on pytest's pythonpath)."""

"""Benchmarks that reproduce the paper's experiments (``kneeseg bench ...``)."""

"""Measured comparisons; each module writes its results to ``benchmarks/results/``."""

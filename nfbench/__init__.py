"""nfbench: reproduce the benchmarks of residual networks trained without batch normalisation."""

__version__ = "0.1.0"

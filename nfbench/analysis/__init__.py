"""Analysis of models and runs: ``summary`` (parameters and FLOPs), ``spp`` and ``spp_plot`` (signal
propagation at initialisation), ``report`` (tables and curves over run directories) and ``tables`` (the one
table formatter).
"""

"""Benchmarks of fused ExpandNet units and networks against the compact layer and the unfused chain.

Run ``python -m bench.run`` (``--help`` for flags); ``bench/results/`` holds committed GPU results."""

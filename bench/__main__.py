"""``python -m bench`` / ``python -m expandnets_cuda.bench``: the main benchmark (bench.run)."""
from .run import main

main()

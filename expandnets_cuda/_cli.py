"""Console-script entry points whose target does not return an exit status itself."""
from __future__ import annotations

from typing import List, Optional


def bench(argv: Optional[List[str]] = None) -> int:
    """``expandnets-bench``: ``python -m bench.run`` of a checkout, from an installed package.

    ``bench.run.main`` returns the benchmark record; a console script would hand that dict to
    ``sys.exit``, which prints it and exits with status 1.
    """
    from expandnets_cuda.bench.run import main
    main(argv)
    return 0

"""`python sweeps/paper_grid.py` from a checkout: the same as `psreval grid` (see psreval_tune/sweeps/paper_grid.py)."""

import sys

from psreval_tune.sweeps.paper_grid import main

if __name__ == "__main__":
    sys.exit(main())

"""`python sweeps/search.py` from a checkout: the same as `psreval search` (see psreval_tune/sweeps/search.py)."""

import sys

from psreval_tune.sweeps.search import main

if __name__ == "__main__":
    sys.exit(main())

"""`python sweeps/reproduce.py` from a checkout: the same as `psreval reproduce` (see psreval_tune/sweeps/reproduce.py)."""

import sys

from psreval_tune.sweeps.reproduce import main

if __name__ == "__main__":
    sys.exit(main())

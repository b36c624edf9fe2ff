"""`python sweeps/reproduce.py`: the same as `psreval reproduce`."""

import sys

from psreval_tune.sweeps.reproduce import main

if __name__ == "__main__":
    sys.exit(main())

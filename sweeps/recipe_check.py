"""`python sweeps/recipe_check.py` from a checkout: the same as `psreval recipe-check` (see psreval_tune/sweeps/recipe_check.py)."""

import sys

from psreval_tune.sweeps.recipe_check import main

if __name__ == "__main__":
    sys.exit(main())

"""`python sweeps/recipe_check.py`: the same as `psreval recipe-check`."""

import sys

from psreval_tune.sweeps.recipe_check import main

if __name__ == "__main__":
    sys.exit(main())

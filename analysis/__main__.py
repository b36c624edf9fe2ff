"""`python -m analysis` from a checkout: the same as `psreval report` (psreval_tune/analysis/cli.py)."""

import sys

from psreval_tune.analysis.cli import main

sys.exit(main())

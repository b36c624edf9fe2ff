"""The analysis report a sweep script writes at its end (shared by paper_grid.py and search.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # analysis/ lives beside sweeps/ and is not installed


def report(*args, **kwargs):
    """analysis.report_sweep, imported when the trials are done (a broken analysis/ costs the
    report, never the sweep)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from analysis import report_sweep

    return report_sweep(*args, **kwargs)

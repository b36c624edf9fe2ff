"""The packages a cycle needs beyond torch, checked before any work (importlib only: nothing heavy loads).

``psreval run`` and every sweep entry point call :func:`check_dependencies` first, so a missing package is one
line naming the command that installs it, not an ImportError inside a trial minutes later.
"""

from __future__ import annotations

import importlib.util

from .errors import ConfigError

REQUIRED_MODULES = {
    "torchattacks": "pip install --no-deps torchattacks==3.5.1 (see README, Install choices)",
    "opacus": "pip install -r requirements.txt",
}


def check_dependencies() -> None:
    for module, how in REQUIRED_MODULES.items():
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"the {module} package is not installed; install it with: {how}")

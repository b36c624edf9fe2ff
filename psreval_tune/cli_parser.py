"""The argument parser every psreval command line uses (psreval, psreval ui, the sweep scripts,
psreval xseed, the report): no abbreviated flags, and an error is one line and exit status 2.

This module imports nothing from the package.
"""

from __future__ import annotations

import argparse
import typing
from typing import Any


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --ep must not silently mean --epsilon
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:  # one line, exit 2, no usage dump
        self.exit(2, f"error: {message} (see --help)\n")

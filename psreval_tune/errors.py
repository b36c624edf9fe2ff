"""The package's user-facing error types.

This module imports nothing from the package, so every module can raise them: the registries
(attacks/, datasets/, threats/) raise ConfigError without importing config.py, which imports them.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-supplied value is not allowed. The message is one line."""

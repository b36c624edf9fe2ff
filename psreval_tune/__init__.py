"""psreval-tune: PSREval cycles (federated DP training, int8 PTQ, adversarial
attacks) as a library, swept with Ray Tune and tracked in MLflow.

The cycle modules import lazily so that ``python -m psreval_tune --help`` and
config validation answer before torch has loaded.
"""

from .config import ConfigError, CycleConfig

__all__ = ["ConfigError", "CycleConfig", "run_cycle"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "run_cycle":
        from .cycle import run_cycle

        return run_cycle
    raise AttributeError(name)

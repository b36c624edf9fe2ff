"""Privacy accountants, one registry entry each, bound to Opacus' implementation.

The accountant turns a run's (noise multiplier, sample rate, steps) history
into epsilon at a given delta. Opacus implements them; this registry is the
project's one list of the names (config validation, CLI help and the
client-level DP of client_dp.py read it), in the order the paper uses them.
It imports nothing from the package, so config.py can import it.
"""

from __future__ import annotations

from opacus.accountants import GaussianAccountant, IAccountant, PRVAccountant, RDPAccountant

from .registry import Registry

ACCOUNTANTS = Registry("accountant")

ACCOUNTANTS.register("rdp", order=0, description="Renyi DP of the subsampled Gaussian (Mironov 2017): an upper bound")(
    RDPAccountant
)
ACCOUNTANTS.register(
    "prv", order=1, description="privacy loss random variables (Gopi et al. 2021): tight numerical accounting"
)(PRVAccountant)
ACCOUNTANTS.register(
    "gdp", order=2, description="Gaussian DP central limit approximation (Dong et al. 2019): many-step estimate"
)(GaussianAccountant)


def create(name: str) -> IAccountant:
    """A new, empty accountant of the named kind; a one-line ValueError names the allowed ones."""
    return ACCOUNTANTS.get(name).obj()

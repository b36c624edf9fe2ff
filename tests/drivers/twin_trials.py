"""Test driver: two identical DP trials (same config, same seed) in one sweep.

The worker-kill test SIGKILLs one trial's process mid-training; the other is
its uninterrupted reference, run under the same Ray worker settings.
TWIN_TRIALS_ROUNDS sets the rounds (default 6: the kill comes after round 3).
"""

import os
import sys

from ray import tune

from psreval_tune import recipes
from psreval_tune.sweeps.engine import SweepSpec, main_guard, parser, run_sweep

SPACE = {
    "dataset": "digits",
    "arch": "cnn",
    "epsilon": 3.4,
    "threat": "train_time_attack",
    "adv_fraction": 0.2,
    "attack": "FGSM",
    "eval_attacks": ["FGSM"],
    "eval_samples": 64,
    "attack_repeats": 1,
    **recipes.SMOKE,
    "rounds": int(os.environ.get("TWIN_TRIALS_ROUNDS", "6")),
    # a dict value is merged into the config: two trials, identical settings
    "replica": tune.grid_search([{"seed": 0}, {"seed": 0}]),
}


@main_guard
def main(argv=None) -> int:
    args = parser("two identical DP trials").parse_args(argv)
    run_sweep(args, SweepSpec(kind="twins", param_space=SPACE))
    return 0


if __name__ == "__main__":
    sys.exit(main())

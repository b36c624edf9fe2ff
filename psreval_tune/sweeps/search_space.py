"""What ``psreval search`` searches: its spaces (a sweep file's conditional params, Optuna define-by-run, or
the built-in training-recipe space), their enumeration, the Pareto front of the results, and the Optuna
searcher (PsrevalOptunaSearch) that prunes what ASHA stopped and never proposes a config twice.
``search.py`` is the entry point that resolves a search file and runs it.
"""

from __future__ import annotations

import itertools
import json
import sys
from typing import Any, Iterator, Sequence

from ..checks import finite_number

MODES = ("max", "min")
ASHA_METRICS = {"acc_val": "max", "train_loss": "min"}  # per-round, never a test metric
# Keep in step with trainable.SELECTION_METRICS (a test checks): the final validation metrics a
# search may optimise. Here so that `psreval search --help` and file errors need no torch.
SELECTION_METRICS = ("acc_val_float", "acc_val_wb_pgd")
RECIPE_ROUNDS = {False: [5, 10], True: [5, 10, 20]}  # by private
# What --space recipe trains: one setting, attacked only as far as the cycle needs (cheap FGSM), no twin.
RECIPE_FIXED = {"threat": "none", "eval_attacks": ["FGSM"], "train_twin": False}
RECIPE_SETTING = ("epsilon", "arch")  # a recipe search's one setting
DEFAULT_OBJECTIVES = {"paper": {"acc_val_float": "max", "acc_val_wb_pgd": "max"}, "recipe": {"acc_val_float": "max"}}
ENUMERATE_LIMIT = 20000  # configs checked before a search starts (ranges at both ends)
MAX_PROPOSALS = 100  # proposals in a row that repeat earlier configs before the space counts as exhausted


def pareto(frame, objectives: Sequence[str], modes: Sequence[str]):
    """Rows not dominated by any other row (all objectives as good, one better)."""
    done = frame.dropna(subset=list(objectives))
    signs = [1 if m == "max" else -1 for m in modes]
    values = [[s * row[o] for o, s in zip(objectives, signs)] for _, row in done.iterrows()]

    def dominated(i: int) -> bool:
        return any(
            all(b >= a for a, b in zip(values[i], other)) and any(b > a for a, b in zip(values[i], other))
            for j, other in enumerate(values)
            if j != i
        )

    keep = [i for i in range(len(values)) if not dominated(i)]
    return done.iloc[keep].sort_values(list(objectives), ascending=[m == "min" for m in modes])


# --- the spaces (module-level: Tune pickles the searcher, with these partials, into its checkpoints) ---


def active(param: dict[str, Any], context: dict[str, Any]) -> bool:
    """Whether a param's conditions hold: each named field is fixed or sampled above, with an allowed value."""
    missing = object()
    return all(context.get(key, missing) in allowed for key, allowed in param.get("when", {}).items())


def conditional_space(trial, params: dict[str, dict[str, Any]], fixed: dict[str, Any]) -> dict[str, Any]:
    """Optuna define-by-run over a sweep file's params: a param is sampled only when its conditions hold
    (threat none: no adv_fraction, so 0; FGSM: no attack_alpha). Returns the trial's whole config."""
    config = dict(fixed)
    for name, param in params.items():
        if not active(param, config):
            continue
        if "choices" in param:
            config[name] = trial.suggest_categorical(name, param["choices"])
        elif param["int"]:
            config[name] = trial.suggest_int(name, param["low"], param["high"], log=param["log"])
        else:
            config[name] = trial.suggest_float(name, param["low"], param["high"], log=param["log"])
    return config


def recipe_space(trial, fixed: dict[str, Any]) -> dict[str, Any]:
    """Optuna define-by-run: the training fields of a recipe (clipping only under DP)."""
    private = fixed.get("epsilon") is not None
    if private:
        trial.suggest_float("lr", 0.05, 2.0, log=True)
        trial.suggest_categorical("batch_size", [64, 128, 256])
        trial.suggest_float("max_grad_norm", 0.1, 4.0, log=True)
    else:
        trial.suggest_float("lr", 0.003, 0.2, log=True)
        trial.suggest_categorical("batch_size", [16, 32, 64])
    if "rounds" not in fixed:
        trial.suggest_categorical("rounds", RECIPE_ROUNDS[private])
    trial.suggest_categorical("local_epochs", [1, 2, 3])
    trial.suggest_categorical("momentum", [0.0, 0.5, 0.9])
    trial.suggest_categorical("lr_schedule", ["constant", "cosine"])
    trial.suggest_categorical("reset_optimizer", [True, False])
    return fixed


def enumerate_space(
    params: dict[str, dict[str, Any]], fixed: dict[str, Any], limit: int = ENUMERATE_LIMIT
) -> Iterator[dict[str, Any]]:
    """The configs the conditional space can propose, a range as its two ends (at most ``limit``)."""
    names = list(params)

    def walk(i: int, config: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if i == len(names):
            yield config
            return
        param = params[names[i]]
        if not active(param, config):
            yield from walk(i + 1, config)
            return
        values = param["choices"] if "choices" in param else [param["low"], param["high"]]
        for value in values:
            yield from walk(i + 1, {**config, names[i]: value})

    return itertools.islice(walk(0, dict(fixed)), limit)


def finite(params: dict[str, dict[str, Any]]) -> bool:
    return all("choices" in p for p in params.values())


def _key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _finite_values(values: Any) -> bool:
    values = values if isinstance(values, list) else [values]
    return all(finite_number(v) for v in values)


# Where Tune's checkpoints find the searcher class (pickled by reference): the entry module, as before this
# module existed, so a search checkpointed by an earlier version resumes. search.__getattr__ serves it.
SEARCHER_MODULE = "psreval_tune.sweeps.search"


def searcher_class():
    """OptunaSearch with two fixes; made on first use (it imports Ray Tune and Optuna), once."""
    if "PsrevalOptunaSearch" in globals():
        return globals()["PsrevalOptunaSearch"]
    from ray.tune.search.optuna import OptunaSearch

    PsrevalOptunaSearch = type(
        "PsrevalOptunaSearch", (_SearcherFixes, OptunaSearch), {"__doc__": _SearcherFixes.__doc__}
    )
    PsrevalOptunaSearch.__module__ = SEARCHER_MODULE
    PsrevalOptunaSearch.__qualname__ = "PsrevalOptunaSearch"
    globals()["PsrevalOptunaSearch"] = PsrevalOptunaSearch
    return PsrevalOptunaSearch


class _SearcherFixes:
    """Ray's OptunaSearch, but:

    - a trial ASHA stopped (its final objectives are NaN placeholders: Ray needs the metric in every
      result) is told to Optuna as PRUNED. Ray 2.60 would tell it COMPLETE with NaN, which Optuna
      refuses ("The value nan is not acceptable", logged by Ray) and the Optuna trial stays RUNNING.
      Its NaN per-round values are not reported as intermediate values either.
    - a config identical to one proposed before is not proposed again: that Optuna trial is told
      FAIL (it never runs) and Optuna is asked again; after MAX_PROPOSALS repeats in a row, or
      once every config of a finite space was proposed, the search is finished.

    Mixed in before OptunaSearch by searcher_class (this module imports neither Ray Tune nor Optuna).
    """

    def __init__(self, *args: Any, distinct: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._distinct = distinct  # configs in a finite space (None: a range makes it infinite)
        self._proposed: set[str] = set()

    def suggest(self, trial_id: str):
        from optuna.trial import TrialState
        from ray.tune.search import Searcher

        for _ in range(MAX_PROPOSALS):
            if self._distinct is not None and len(self._proposed) >= self._distinct:
                break
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config
            key = _key(config)
            if key not in self._proposed:
                self._proposed.add(key)
                return config
            self._ot_study.tell(self._ot_trials.pop(trial_id), state=TrialState.FAIL)  # a repeat: never run
        print(
            f"search: every config of the space was proposed ({len(self._proposed)}); no more trials",
            file=sys.stderr,
            flush=True,
        )
        return Searcher.FINISHED

    def _values(self, result: dict | None):
        if not result:
            return None
        if isinstance(self.metric, list):
            return [result.get(m) for m in self.metric]
        return result.get(self.metric)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not isinstance(self.metric, list) and not _finite_values(result.get(self.metric)):
            return  # a per-round placeholder, not a value of the objective
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        if (
            _finite_values(self._values(result))
            or trial_id in self._completed_trials
            or trial_id not in self._ot_trials
        ):
            return super().on_trial_complete(trial_id, result, error)
        # stopped early (no final objective): pruned; or failed
        self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.FAIL if error else TrialState.PRUNED)
        self._completed_trials.add(trial_id)

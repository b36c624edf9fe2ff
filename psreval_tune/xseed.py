"""Cross-seed transfer (partial white-box): adversarial examples crafted on separately trained models.

The paper's partial white-box attacker knows the architecture but not the weights. A trial's own models
cannot play that attacker: examples crafted on the target itself make a white-box attack, and the
trial's twin shares its seed, data and initialisation. Here the generators are the models of the
*other seeds* of the same setting (same dataset, arch, recipe, threat and, for DP, the same epsilon):
trained separately, same architecture, different weights. Nothing is trained for it.

For one target trial ``t`` and every other seed ``s`` of its setting, each transfer attack (not a
minimum-norm one: ``attacks.transfers``) is run on ``s``'s float DP model and on ``s``'s float
non-private twin, on exactly ``t``'s attacked images (``cycle.eval_images``), and the examples are
evaluated on ``t``'s four models (float DP, float twin, and their int8 versions). Run ``r`` of a
generator of seed ``s`` uses attack seed ``s + r`` (``evaluate.attack_matrix``), so one generator's
examples are crafted once per attack and image set and evaluated on every target that uses those
images, and the numbers do not depend on which targets are computed together.

Metrics per target trial (``schema``: ``acc_xseed_*``), for generator g in {nonprivate, dp} and target
in {nonprivate, dp, int8_nonprivate, int8_dp}:

- ``acc_xseed_<attack>_<g>_to_<target>_mean``: the mean over generator seeds of the mean over attack
  runs of the target's accuracy on the examples; ``_ci_low``/``_ci_high``: Wilson 95% over the
  attacked images (``evaluate.wilson``, as every robust accuracy); ``_std``: over every (generator
  seed, run) accuracy, when there are several;
- ``acc_xseed_<attack>_<g>_to_<target>_worst``: the same mean over generator seeds of the accuracy on
  the examples of the restart that fooled the generator (``evaluate.Cell.worst``, transfer), with its
  interval;
- ``xseed_generators``: how many other seeds (generator seeds) the means are over.

A generator is never the target trial's own model: a generator's seed differs from the target's, and
none of its model objects is one of the target's (``check_separate``, run before any attack).
Plain PyTorch: no Ray, no MLflow (the post-sweep step that feeds it lives in ``sweeps/xseed.py``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

import torch
from torch import nn

from .attacks import AttackSpec, transfers
from .evaluate import Cell, attack_matrix, mean_std, wilson

COUNT = "xseed_generators"


def metric_stem(attack: str, generator: str, target: str) -> str:
    """'acc_xseed_pgd_dp_to_int8_dp': the stem of one cell's metrics (``_mean``, ``_worst``, ...)."""
    return f"acc_xseed_{attack.lower()}_{generator}_to_{target}"


@dataclass(frozen=True, eq=False)
class TrialModels:
    """One private trial's four models. ``key`` names the trial (its MLflow run id); ``seed`` its seed."""

    key: Hashable
    seed: int
    float_dp: nn.Module
    float_nonprivate: nn.Module
    int8_dp: nn.Module
    int8_nonprivate: nn.Module

    def generators(self) -> dict[str, nn.Module]:
        return {"nonprivate": self.float_nonprivate, "dp": self.float_dp}

    def targets(self) -> dict[str, nn.Module]:
        return {
            "nonprivate": self.float_nonprivate,
            "dp": self.float_dp,
            "int8_nonprivate": self.int8_nonprivate,
            "int8_dp": self.int8_dp,
        }


class NotSeparate(ValueError):
    """A would-be generator is the target trial's own model (same seed, or the very same model object)."""


def check_separate(target: TrialModels, generator: TrialModels) -> None:
    """Raise :class:`NotSeparate` unless ``generator`` was trained separately from ``target``."""
    if generator.key == target.key or generator.seed == target.seed:
        raise NotSeparate(
            f"generator trial {generator.key!r} (seed {generator.seed}) is not another seed of target trial "
            f"{target.key!r} (seed {target.seed}): crafting on the target's own models is a white-box attack"
        )
    own = {id(m) for m in target.targets().values()}
    shared = [name for name, m in generator.generators().items() if id(m) in own]
    if shared:
        raise NotSeparate(
            f"generator {shared[0]!r} of trial {generator.key!r} is a model of target trial {target.key!r} itself"
        )


def transfer_specs(specs: Sequence[AttackSpec]) -> list[AttackSpec]:
    """The attacks whose examples may be evaluated on other models (minimum-norm ones such as FAB left out)."""
    return [s for s in specs if transfers(s.name)]


def generator_trials(target: TrialModels, trials: Sequence[TrialModels]) -> list[TrialModels]:
    """The generators of ``target``: one trial per other seed of its setting (the first of each seed), by seed."""
    by_seed: dict[int, TrialModels] = {}
    for t in trials:
        if t.seed != target.seed and t.seed not in by_seed:
            by_seed[t.seed] = t
    return [by_seed[s] for s in sorted(by_seed)]


def _same_images(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> bool:
    return (a[0] is b[0] and a[1] is b[1]) or (
        a[0].shape == b[0].shape and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    )


def xseed_group(
    trials: Sequence[TrialModels],
    images: Mapping[Hashable, tuple[torch.Tensor, torch.Tensor]],
    specs: Sequence[AttackSpec] | Mapping[Hashable, Sequence[AttackSpec]],
    *,
    repeats: int,
    num_classes: int,
    device: str = "cpu",
    targets: Sequence[Hashable] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[Hashable, dict[str, float]]:
    """Cross-seed transfer metrics of every trial in ``targets`` (default: all of ``trials``), the trials
    of one setting; a trial without another seed among ``trials`` gets none.

    ``images[key]``: (x, y) the target trial ``key`` attacked (``cycle.eval_images``); targets with equal
    images share one crafting per generator and attack. ``specs``: the attacks (one list, or one per target
    key: the target's ``eval_attacks``); minimum-norm ones are left out. Returns ``{key: metrics}``.
    """
    say = progress or (lambda msg: None)
    by_key, wanted = _index_targets(trials, images, targets)

    def specs_of(key: Hashable) -> list[AttackSpec]:
        return transfer_specs(specs[key] if isinstance(specs, Mapping) else specs)

    # per target key: (attack, generator, target) -> one Cell per generator seed
    cells: dict[Hashable, dict[tuple[str, str, str], list[Cell]]] = {k: {} for k in wanted}
    gens_of = {k: generator_trials(by_key[k], trials) for k in wanted}
    for k in wanted:
        for g in gens_of[k]:
            check_separate(by_key[k], g)  # before any attack runs
    for g in trials:
        users = [k for k in wanted if any(x is g for x in gens_of[k])]
        for (x, y), sp, keys in _shared_craftings(users, images, specs_of):
            if not sp:
                continue
            crafted = _craft_and_evaluate(g, {k: by_key[k] for k in keys}, x, y, sp, repeats, num_classes, device)
            for k, cell_key, cell in crafted:
                cells[k].setdefault(cell_key, []).append(cell)
            say(f"generator seed {g.seed}: {', '.join(s.name for s in sp)} on {len(y)} images -> {len(keys)} target(s)")
    return {k: _metrics(cells[k], len(gens_of[k]), len(images[k][1])) for k in wanted if gens_of[k]}


def _index_targets(
    trials: Sequence[TrialModels],
    images: Mapping[Hashable, tuple[torch.Tensor, torch.Tensor]],
    targets: Sequence[Hashable] | None,
) -> tuple[dict[Hashable, TrialModels], list[Hashable]]:
    """The trials by key and the target keys asked for (default: every trial); a ValueError for two trials
    with one key, or a target that is no trial or has no images."""
    by_key = {t.key: t for t in trials}
    if len(by_key) != len(trials):
        raise ValueError("two trials share one key")
    wanted = list(by_key) if targets is None else list(targets)
    missing = [k for k in wanted if k not in by_key or k not in images]
    if missing:
        raise ValueError(f"target {missing[0]!r}: no such trial, or no images for it")
    return by_key, wanted


def _shared_craftings(
    users: Sequence[Hashable],
    images: Mapping[Hashable, tuple[torch.Tensor, torch.Tensor]],
    specs_of: Callable[[Hashable], list[AttackSpec]],
) -> list[tuple[tuple[torch.Tensor, torch.Tensor], list[AttackSpec], list[Hashable]]]:
    """One generator's craftings: (images, attacks, target keys), targets with the same images and attacks
    sharing one, in the order of ``users``."""
    batches: list[tuple[tuple[torch.Tensor, torch.Tensor], list[AttackSpec], list[Hashable]]] = []
    for k in users:
        for imgs, sp, keys in batches:
            if sp == specs_of(k) and _same_images(imgs, images[k]):
                keys.append(k)
                break
        else:
            batches.append((images[k], specs_of(k), [k]))
    return batches


def _craft_and_evaluate(
    generator: TrialModels,
    targets: Mapping[Hashable, TrialModels],
    x: torch.Tensor,
    y: torch.Tensor,
    specs: Sequence[AttackSpec],
    repeats: int,
    num_classes: int,
    device: str,
) -> list[tuple[Hashable, tuple[str, str, str], Cell]]:
    """Examples crafted on ``generator``'s models, evaluated on the four models of every target trial:
    (target key, (attack, generator model, target model), cell) per matrix cell."""
    flat = {(k, name): m for k, trial in targets.items() for name, m in trial.targets().items()}
    # attack_matrix names targets by string; index them and map back
    names = {f"t{i}": pair for i, pair in enumerate(flat)}
    matrix = attack_matrix(
        generator.generators(),
        {n: flat[pair] for n, pair in names.items()},
        x,
        y,
        list(specs),
        repeats=repeats,
        seed=generator.seed,
        num_classes=num_classes,
        device=device,
    )
    out = []
    for (attack, gname, tname), cell in matrix.items():
        k, target = names[tname]
        out.append((k, (attack, gname, target), cell))
    return out


def _metrics(cells: Mapping[tuple[str, str, str], list[Cell]], generators: int, n: int) -> dict[str, float]:
    out: dict[str, float] = {COUNT: float(generators)}
    for (attack, generator, target), per_seed in cells.items():
        stem = metric_stem(attack, generator, target)
        mean = statistics.fmean(c.mean() for c in per_seed)
        worst = statistics.fmean(c.worst(white_box=False) for c in per_seed)
        out[f"{stem}_mean"] = mean
        out[f"{stem}_ci_low"], out[f"{stem}_ci_high"] = wilson(mean, n)
        runs = [a for c in per_seed for a in c.run_accuracies()]
        if len(runs) > 1:
            out[f"{stem}_std"] = mean_std(runs)[1]
        out[f"{stem}_worst"] = worst
        out[f"{stem}_worst_ci_low"], out[f"{stem}_worst_ci_high"] = wilson(worst, n)
    return out


def xseed_metrics(
    target: TrialModels,
    generators: Sequence[TrialModels],
    x: torch.Tensor,
    y: torch.Tensor,
    specs: Sequence[AttackSpec],
    *,
    repeats: int,
    num_classes: int,
    device: str = "cpu",
) -> dict[str, float]:
    """Cross-seed transfer metrics of one target trial, its generators the trials of ``generators`` (other
    seeds of its setting; one per seed is used). Empty when there is none."""
    for g in generators:
        check_separate(target, g)
    out = xseed_group(
        [target, *generators],
        {target.key: (x, y)},
        specs,
        repeats=repeats,
        num_classes=num_classes,
        device=device,
        targets=[target.key],
    )
    return out.get(target.key, {})

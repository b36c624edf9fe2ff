"""Every metric a PSREval cycle emits, declared once: name (or name template), direction, unit and
whether it is a per-round value or a final one.

The cycle (``cycle.py``), the federation's rounds (``federated.RoundResult``, ``trainable.round_metrics``),
the trainable (``time_log_model_s``, ``twin_from_cache``) and MLflow's system-metrics monitor (``system/...``)
emit these; the analysis reads direction and unit from here and never guesses a metric from a name prefix.

A template's placeholders match one name part each:

- ``{attack}``: an attack in lower case (``pgd``, ``fgsm``, ...; any new attack matches too);
- ``{generator}``: the model adversarial examples are crafted on (``nonprivate``, ``dp``);
- ``{target}``: the model they are evaluated on (``nonprivate``, ``dp``, ``int8_nonprivate``, ``int8_dp``);
- ``{model}``: a private trial's other model (its non-private twin: ``nonprivate``);
- ``{phase}``: a timed phase (``train``, ``attack``, ``adv_gen``, ``total``, ``log_model``, ...);
- ``{name}``: anything (MLflow's system metrics);
- ``{masking}``: what a gradient-masking check ran (``pgd``, ``large_eps``, ``more_steps``, ``square``);
- ``{check}``: a gradient-masking check (``large_eps``, ``more_steps``, ``square``) or ``any``;
- ``{index}``: the position of an eps in ``attack_eps_grid``.

Accuracy families with ``ci=True`` also emit ``<stem>_ci_low`` / ``<stem>_ci_high`` (Wilson 95% over
images; the stem drops a trailing ``_mean``); ``std=True`` families emit ``<stem>_std`` (over attack runs).

This module imports nothing but the standard library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

HIGHER, LOWER, NONE = "higher", "lower", "none"  # which way is better
FINAL, PER_ROUND, SAMPLED = "final", "per_round", "sampled"  # when it is emitted

GENERATORS = ("nonprivate", "dp")  # models examples are crafted on
TARGETS = ("nonprivate", "dp", "int8_nonprivate", "int8_dp")  # models examples are evaluated on


@dataclass(frozen=True)
class Metric:
    template: str
    direction: str  # HIGHER, LOWER or NONE
    unit: str  # fraction, percent, bytes, seconds, milliseconds, count, epsilon, probability, loss, flag, ratio, lr
    when: str = FINAL  # FINAL, PER_ROUND or SAMPLED
    ci: bool = False  # also <stem>_ci_low / <stem>_ci_high
    std: bool = False  # also <stem>_std
    doc: str = ""


_ACC = dict(direction=HIGHER, unit="fraction", ci=True)
_ROBUST = dict(direction=HIGHER, unit="fraction", ci=True, std=True)

METRICS: tuple[Metric, ...] = (
    # per round (federated.RoundResult, trainable.round_metrics; lr and acc_clean: older runs)
    Metric("round", NONE, "count", PER_ROUND, doc="FL round, 1-based"),
    Metric("train_loss", LOWER, "loss", PER_ROUND, doc="mean training loss of the round"),
    Metric("acc_val", HIGHER, "fraction", PER_ROUND, doc="global model on the validation split"),
    Metric("epsilon", LOWER, "epsilon", PER_ROUND, doc="privacy spent so far (DP only)"),
    Metric("acc_clean", HIGHER, "fraction", PER_ROUND, doc="old per-round name of acc_val"),
    Metric("lr", NONE, "lr", PER_ROUND, doc="learning rate of the round"),
    # clean accuracy (cycle.clean_metrics)
    Metric("n_test", NONE, "count", doc="images behind a clean accuracy (whole test split)"),
    Metric("n_eval", NONE, "count", doc="attacked images"),
    Metric("acc_clean_float", **_ACC, doc="the trial's own float model, whole test split"),
    Metric("acc_clean_int8", **_ACC, doc="its int8 version"),
    Metric("acc_clean_float_{model}", **_ACC, doc="a private trial's non-private twin, float"),
    Metric("acc_clean_int8_{model}", **_ACC, doc="the twin's int8 version"),
    Metric("acc_clean_eval_{target}", **_ACC, doc="clean accuracy on exactly the attacked images"),
    # validation split (cycle.validation_metrics): what searches may select on
    Metric("acc_val_float", HIGHER, "fraction"),
    Metric("acc_val_wb_{attack}", HIGHER, "fraction"),
    # size and privacy (cycle.size_and_privacy_metrics)
    Metric("size_bytes_float", LOWER, "bytes"),
    Metric("size_bytes_int8", LOWER, "bytes"),
    Metric("size_reduction_pct", HIGHER, "percent"),
    Metric("epsilon_spent", LOWER, "epsilon"),
    Metric("noise_multiplier", NONE, "ratio"),
    Metric("sample_rate", NONE, "fraction"),
    Metric("dp_steps", NONE, "count"),
    Metric("delta", LOWER, "probability"),
    Metric("dp_bookkeeping", NONE, "flag", doc="1: book-keeping clipping trained the DP model, 0: Opacus' hooks"),
    Metric("final_train_loss", LOWER, "loss"),
    # robust accuracy (cycle.robust_metrics). The headline is _worst: white-box, an image counts as robust only
    # if it survives every restart (attack_runs_<attack> of them); transfer, the examples of the restart that
    # fooled the generator. _mean (the mean accuracy over restarts, the names from before _worst) is weaker and
    # secondary. Deterministic attacks run once: _worst == _mean. Minimum-norm attacks (FAB) and AutoAttack
    # have no transfer cells and no _int8 cell (attacks/__init__.py: transfers).
    Metric("attack_runs_{attack}", NONE, "count", doc="restarts behind a robust accuracy"),
    Metric("acc_wb_{attack}_worst", **_ACC, doc="headline: white-box on the trial's float model, worst over restarts"),
    Metric("acc_wb_{attack}_int8_worst", **_ACC, doc="its examples (restart that fooled it) on its int8 version"),
    Metric("acc_wb_{attack}_int8_bpda_worst", **_ACC, doc="white-box on the int8 model via BPDA, worst over restarts"),
    Metric("acc_wb_{attack}_int8_bpda_{model}_worst", **_ACC, doc="white-box on the twin's int8 model via BPDA"),
    Metric("acc_transfer_{attack}_{generator}_to_{target}_worst", **_ACC, doc="examples of the fooling restart"),
    Metric("acc_wb_{attack}_mean", **_ROBUST, doc="mean over restarts of white-box on the trial's float model"),
    Metric("acc_wb_{attack}_int8_mean", **_ROBUST, doc="mean over restarts, the same examples on its int8 version"),
    Metric("acc_wb_{attack}_int8_bpda_mean", **_ROBUST, doc="mean over restarts, white-box on the int8 model (BPDA)"),
    Metric("acc_wb_{attack}_int8_bpda_{model}_mean", **_ROBUST, doc="mean over restarts, twin's int8 model (BPDA)"),
    Metric("acc_transfer_{attack}_{generator}_to_{target}_mean", **_ROBUST, doc="mean over restarts"),
    # cross-seed transfer (psreval_tune/xseed.py, after the sweep: psreval xseed): private trials with threat none;
    # examples crafted on the models of OTHER seeds of the same setting (never the trial's own), same images
    Metric(
        "acc_xseed_{attack}_{generator}_to_{target}_mean",
        **_ROBUST,
        doc="examples crafted on the {generator} model of other seeds of the same setting (DP: same epsilon), "
        "evaluated on this trial's {target}, same images as acc_clean_eval_{target}; mean over attack runs and "
        "generator seeds",
    ),
    Metric("acc_xseed_{attack}_{generator}_to_{target}_worst", **_ACC, doc="the fooling restart's examples"),
    Metric("xseed_generators", NONE, "count", doc="other-seed models the acc_xseed_* means are over"),
    Metric("acc_loss_wb_{attack}", LOWER, "fraction", doc="clean on the attacked images - robust (_worst)"),
    Metric("acc_loss_wb_{attack}_int8", LOWER, "fraction", doc="clean - robust (_worst), int8"),
    Metric("acc_loss_wb_{attack}_int8_bpda", LOWER, "fraction", doc="clean - robust (_worst), int8 via BPDA"),
    # AutoAttack (cycle.autoattack_metrics; config autoattack): standard version, once, on n_autoattack images,
    # a fixed subset of the attacked images (seeded by the trial's seed; autoattack_samples, capped by them)
    Metric("acc_wb_autoattack", **_ACC, doc="AutoAttack on the trial's float model, n_autoattack images"),
    Metric("acc_wb_autoattack_pgd", **_ACC, doc="the headline PGD (_worst) on exactly the AutoAttack images"),
    Metric("n_autoattack", NONE, "count", doc="images AutoAttack ran on (a seeded subset of the attacked ones)"),
    # gradient-masking checks (evaluate.masking_checks; config masking_checks): n_masking images, every model
    # (float models white-box, int8 models through BPDA; Square on each model itself, gradient-free)
    Metric("acc_masking_{masking}_{target}", **_ACC, doc="pgd | large_eps | more_steps | square on that model"),
    Metric("masking_suspect_{check}", LOWER, "flag", doc="1: a model failed the check (evaluate.MASKING_DOC)"),
    Metric("n_masking", NONE, "count", doc="images the gradient-masking checks ran on"),
    # robustness curves (evaluate.eps_curve; config attack_eps_grid): PGD, worst over restarts, n_curve images
    Metric("curve_eps_{index}", NONE, "pixels", doc="the index-th eps of attack_eps_grid, ascending"),
    Metric("acc_curve_{index}_{target}", **_ACC, doc="PGD robust accuracy of a model at curve_eps_<index>"),
    Metric("auc_curve_{target}", HIGHER, "fraction", doc="area under accuracy vs eps / eps range"),
    Metric("n_curve", NONE, "count", doc="images behind the robustness curves (the attacked images)"),
    # the deployed int8 model (cycle.lower_models, lowering_check, int8_latency; config int8_lowering, int8_latency).
    # Latencies: median ms per batch after a warm-up, on the CPU (a CUDA float model timed on a CPU copy), under the
    # ISA the trial's cpu_* tags name; no compile inside them (time_int8_compile_s has it)
    Metric(
        "int8_lowered",
        NONE,
        "flag",
        doc="1: the int8 models ran inductor-lowered oneDNN int8 code, 0: the PT2E reference graph",
    ),
    Metric(
        "int8_lowered_disagree",
        LOWER,
        "count",
        doc="attacked images the lowered int8 model predicts unlike its reference graph",
    ),
    Metric("n_int8_lowered_check", NONE, "count", doc="images behind int8_lowered_disagree (the attacked images)"),
    Metric("latency_ms_float_b1", LOWER, "milliseconds", doc="the trial's float model, one image"),
    Metric("latency_ms_float_b256", LOWER, "milliseconds", doc="the trial's float model, a batch of 256"),
    Metric(
        "latency_ms_int8_b1", LOWER, "milliseconds", doc="its evaluated int8 model (int8_lowered says which), one image"
    ),
    Metric("latency_ms_int8_b256", LOWER, "milliseconds", doc="its evaluated int8 model, a batch of 256"),
    Metric(
        "throughput_int8_over_float",
        HIGHER,
        "ratio",
        doc="latency_ms_float_b256 / latency_ms_int8_b256: > 1, int8 faster",
    ),
    Metric(
        "time_int8_compile_s",
        LOWER,
        "seconds",
        doc="compiling the lowered int8 models (inside time_quantize_s), batch 1 too",
    ),
    Metric("time_int8_latency_s", LOWER, "seconds", doc="measuring the latency_ms_* (outside every other phase)"),
    # wall time (timing.PhaseTimer.as_metrics, time_total_s, trainable's time_log_model_s)
    Metric("time_{phase}_s", LOWER, "seconds"),
    # threats and client-level privacy (cycle.backdoor_metrics; client DP): asr_* over n_asr images
    Metric("asr_float", LOWER, "fraction", ci=True, doc="backdoor attack success rate, float model"),
    Metric("asr_int8", LOWER, "fraction", ci=True, doc="backdoor attack success rate, int8 model"),
    Metric("client_epsilon_spent", LOWER, "epsilon", doc="privacy spent by one client"),
    Metric("n_asr", NONE, "count", doc="triggered test images outside the backdoor's target class (asr_* over them)"),
    # the trainable's own (trainable.py)
    Metric("twin_from_cache", NONE, "flag", doc="1: the non-private twin came from the twin cache, 0: trained here"),
    # MLflow's system-metrics monitor (tracking.Tracker.system_metrics)
    Metric("system/{name}", NONE, "various", SAMPLED),
)

_PARTS = {
    "attack": r"[a-z0-9]+",
    "generator": "|".join(GENERATORS),
    "target": "|".join(sorted(TARGETS, key=len, reverse=True)),
    "model": "|".join(GENERATORS),
    "phase": r"[a-z0-9_]+",
    "masking": "pgd|large_eps|more_steps|square",
    "check": "large_eps|more_steps|square|any",
    "index": r"[0-9]+",
    "name": r".+",
}


def _stem(template: str) -> str:
    return template[: -len("_mean")] if template.endswith("_mean") else template


def names(metric: Metric) -> tuple[str, ...]:
    """The templates ``metric`` stands for: its own and its _ci_low / _ci_high / _std companions."""
    out = [metric.template]
    if metric.ci:
        out += [f"{_stem(metric.template)}_ci_low", f"{_stem(metric.template)}_ci_high"]
    if metric.std:
        out.append(f"{_stem(metric.template)}_std")
    return tuple(out)


def _regex(template: str) -> re.Pattern:
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += [re.escape(template[pos : m.start()]), f"(?:{_PARTS[m.group(1)]})"]
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


@lru_cache(maxsize=1)
def _compiled() -> tuple[tuple[str, bool, re.Pattern, Metric], ...]:
    """(name template, is a companion, pattern, metric); exact names first, then templates."""
    rows = [(t, t != m.template, _regex(t), m) for m in METRICS for t in names(m)]
    return tuple(sorted(rows, key=lambda r: "{" in r[0]))


@dataclass(frozen=True)
class Match:
    name: str
    template: str  # the declared name template it matches (a _ci_low / _std companion's own)
    metric: Metric
    statistic: str  # "value", "ci_low", "ci_high" or "std"

    @property
    def direction(self) -> str:
        return self.metric.direction if self.statistic != "std" else NONE

    @property
    def unit(self) -> str:
        return self.metric.unit

    @property
    def when(self) -> str:
        return self.metric.when


def lookup(name: str) -> Match | None:
    """The declaration of metric ``name`` (a name, or a declared template itself such as
    ``acc_wb_{attack}_mean``), or None when the schema does not know it."""
    for template, companion, pattern, metric in _compiled():
        if name == template or pattern.fullmatch(name):
            statistic = "value"
            if companion:
                statistic = next(s for s in ("ci_low", "ci_high", "std") if template.endswith(s))
            return Match(name, template, metric, statistic)
    return None


def is_metric(name: str) -> bool:
    return lookup(name) is not None


def is_final(name: str) -> bool:
    m = lookup(name)
    return m is not None and m.when == FINAL


def direction(name: str) -> str | None:
    m = lookup(name)
    return m.direction if m else None


def unit(name: str) -> str | None:
    m = lookup(name)
    return m.unit if m else None


def unknown(names_: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """Those of ``names_`` the schema does not declare, sorted."""
    return sorted(n for n in names_ if not is_metric(n))

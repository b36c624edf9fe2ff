"""analysis.claims, the scale warning and accuracy loss on the same images, on a synthetic trials frame
with known effects.

Three seeds s = 0, 1, 2; every per-seed value is ``mean + k * (s - 1)``, so the mean over seeds is
``mean`` and the t-based 95% CI over seeds is ``mean ± k * T975_2 / sqrt(3)`` (the sample std of
s - 1 is 1).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from psreval_tune.analysis import build_report
from psreval_tune.analysis.claims import CLAIMS, FAILS, HOLDS, INCONCLUSIVE, claims_table
from psreval_tune.analysis.load import config_columns, tidy
from psreval_tune.analysis.metrics import ci_high, ci_low, wilson
from psreval_tune.analysis.reproduction import write_reproduction
from psreval_tune.analysis.scale import scale_warnings

SEEDS = (0, 1, 2)
T975_2 = 4.302652729911275
HALF = T975_2 / math.sqrt(3)  # CI half-width per point of per-seed spread k
N_IMG = 360
TRANSFER = (
    "nonprivate_to_nonprivate",
    "nonprivate_to_dp",
    "nonprivate_to_int8_nonprivate",
    "nonprivate_to_int8_dp",
    "dp_to_nonprivate",
    "dp_to_dp",
    "dp_to_int8_nonprivate",
    "dp_to_int8_dp",
)


def _with_ci(m: dict, n: int) -> dict:
    """Wilson bounds over ``n`` images beside every accuracy, as the cycle writes them."""
    for name in [k for k in m if k.startswith("acc_") and not k.endswith("_std")]:
        m[ci_low(name)], m[ci_high(name)] = wilson(m[name], n)
    return m


def transfer(d: int) -> dict[str, float]:
    """Points; seed offset d = s - 1. c = np->dp - dp->np = 1.5 + d; d = int8 - float = 4 + d; e = 40 + d."""
    t = {
        "dp_to_dp": 20 + d,
        "nonprivate_to_dp": 60 + 2 * d,
        "dp_to_nonprivate": 58.5 + d,
        "nonprivate_to_nonprivate": 10 + d,
        "dp_to_int8_dp": 25.0,
        "nonprivate_to_int8_nonprivate": 12.0,
    }
    t["dp_to_int8_nonprivate"] = t["dp_to_nonprivate"] + 4 + d
    t["nonprivate_to_int8_dp"] = t["nonprivate_to_dp"] + 4 + d
    return t


def metrics(setting: str, seed: int, n_eval: int = N_IMG) -> dict[str, float]:
    """A private trial's final metrics (fractions). Known effects, in points:
    a 74.4 (exact); b-dp -0.5 + 0.1 d (holds); b-np -3 + 0.5 d (does not hold); c 1.5 + d (inconclusive);
    f-robust +10; f-cost 3 + d; f-dp 3 + d; g 3 + 0.1 s (ratio); h 8 + 3 d."""
    d = seed - 1
    dp, np_ = 80.0 + 2 * d, 95.0 + 2 * d
    robust, time = 20.0 + d, 10.0
    if setting.startswith("adv"):
        dp, np_, robust = dp - (3 + d), np_ - (6 + 2 * d), 30.0 + d
        time = 30.0 + seed if setting == "adv_pgd" else 10.0
    elif setting == "tta":
        dp, np_ = dp - 2, np_ - (10 + 3 * d)
    pts = {
        "acc_clean_float": dp,
        "acc_clean_int8": dp - 0.5 + 0.1 * d,
        "acc_clean_float_nonprivate": np_,
        "acc_clean_int8_nonprivate": np_ - 3 + 0.5 * d,
        "acc_wb_pgd_mean": robust,
        "acc_wb_pgd_int8_mean": 25.0,
        # clean accuracy on the attacked images: 5 points below the whole split's (a harder subset)
        "acc_clean_eval_dp": dp - 5,
        "acc_clean_eval_nonprivate": np_ - 5,
        "acc_clean_eval_int8_dp": dp - 6,
        "acc_clean_eval_int8_nonprivate": np_ - 6,
        **{f"acc_transfer_pgd_{k}_mean": v for k, v in transfer(d).items()},
    }
    pts["acc_transfer_pgd_dp_to_dp_mean"] = robust
    m = {k: v / 100 for k, v in pts.items()}
    m.update(
        {
            "size_bytes_float": 4e6,
            "size_bytes_int8": 1.024e6,
            "size_reduction_pct": 74.4,
            "time_train_s": time,
            "time_adv_gen_s": time / 2,
            "n_test": N_IMG,
            "n_eval": n_eval,
            "attack_runs_pgd": 3,
            "acc_wb_pgd_std": 0.01,
            "epsilon_spent": 3.3,
            "dp_steps": 40,
        }
    )
    return _with_ci(m, n_eval)


SETTINGS = {
    "none": ("none", 0.0, "PGD"),
    "adv_pgd": ("adv_training", 0.2, "PGD"),
    "adv_fgsm": ("adv_training", 0.2, "FGSM"),
    "tta": ("train_time_attack", 0.4, "PGD"),
}


def frame(settings=tuple(SETTINGS), seeds=SEEDS, rounds: int = 3, n_eval: int = N_IMG) -> pd.DataFrame:
    rows = []
    for name in settings:
        threat, fraction, attack = SETTINGS[name]
        for seed in seeds:
            rows.append(
                {
                    "sweep": "synthetic",
                    "trial_id": f"{name}_{seed}",
                    "run_id": None,
                    "run_name": name,
                    "source": "test",
                    "dataset": "digits",
                    "arch": "resnet9",
                    "epsilon": 3.4,
                    "threat": threat,
                    "adv_fraction": fraction,
                    "attack": attack,
                    "seed": seed,
                    "rounds": rounds,
                    "local_epochs": 1,
                    "eval_attacks": "PGD",
                    "recipe": "digits/resnet9/dp",
                    "lr_schedule": "cosine",
                    "warmup_rounds": 1,
                    "reset_optimizer": False,
                    **metrics(name, seed, n_eval),
                }
            )
    return tidy(rows)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return claims_table(frame())


def row(table: pd.DataFrame, claim: str) -> pd.Series:
    rows = table[table["claim"] == claim]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_new_metric_names_are_metrics_and_new_config_fields_are_params():
    trials = frame()
    cfg = config_columns(trials)
    for name in ("n_test", "n_eval", "attack_runs_pgd", "acc_wb_pgd_ci_low", "acc_clean_eval_dp", "dp_steps"):
        assert name in trials.columns and name not in cfg, name
    assert {"recipe", "lr_schedule", "warmup_rounds", "reset_optimizer"} <= set(cfg)
    assert len(trials) == 12


@pytest.mark.parametrize(
    "claim, effect, half, verdict",
    [
        ("a", 74.4, 0.0, HOLDS),  # model size does not depend on the seed: exact
        ("b-dp", -0.5, 0.1 * HALF, HOLDS),  # whole CI inside ±1
        ("b-np", -3.0, 0.5 * HALF, FAILS),  # whole CI below -1
        ("c", 1.5, HALF, INCONCLUSIVE),  # [-0.98, 3.98] crosses +2
        ("d", 4.0, HALF, HOLDS),
        ("e", 40.0, HALF, HOLDS),
        ("f-robust", 10.0, 0.0, HOLDS),
        ("f-cost", 3.0, HALF, HOLDS),
        ("f-dp", 3.0, HALF, HOLDS),
        ("g", 3.1, 0.1 * HALF, HOLDS),  # time ratios 3.0, 3.1, 3.2 > 2
        ("h", 8.0, 3 * HALF, HOLDS),
    ],
)
def test_claim_effect_ci_and_verdict(table, claim, effect, half, verdict):
    r = row(table, claim)
    assert r["effect"] == pytest.approx(effect)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(effect - half), pytest.approx(effect + half))
    assert (r["seeds"], r["verdict"]) == (3, verdict)
    assert (r["dataset"], r["arch"]) == ("digits", "resnet9")


def test_images_per_trial_and_what_rows_pool(table):
    assert row(table, "c")["images"] == N_IMG and math.isnan(row(table, "g")["images"])
    assert "at attack PGD, ε 3.4" in row(table, "c")["note"]
    assert "generator in a trial is the target itself" in row(table, "e")["note"]
    assert "adversarial fraction 40%" in row(table, "h")["note"]


def test_a_claim_without_its_trials_is_not_measured():
    table = claims_table(frame(settings=("none", "adv_pgd", "adv_fgsm")))
    h = row(table, "h")
    assert h["verdict"].startswith(
        "not measured (needs private trials with threat train_time_attack at adv_fraction 0.4"
    )
    assert (h["dataset"], h["seeds"]) == ("–", 0) and math.isnan(h["effect"])
    assert list(table["claim"]) == [c.key for c in CLAIMS]  # every claim keeps its row


def test_one_seed_is_inconclusive_except_model_size():
    table = claims_table(frame(seeds=(1,)))
    assert row(table, "a")["verdict"] == HOLDS
    assert row(table, "f-robust")["verdict"] == INCONCLUSIVE and row(table, "f-robust")["seeds"] == 1
    assert math.isnan(row(table, "f-robust")["ci_low"])


# --- the scale warning ---------------------------------------------------------------------------------------


def test_wilson_interval():
    assert wilson(0.5, 100) == (pytest.approx(0.40383, abs=1e-5), pytest.approx(0.59617, abs=1e-5))


def test_scale_warning_names_what_applies_with_its_numbers(tmp_path):
    images, rounds = scale_warnings(frame())  # 3 seeds, 360 attacked images, 3 one-epoch rounds
    assert images.startswith(
        "few images: 360 attacked images per trial (fewer than 1,000); a robust accuracy's "
        "95% interval over images is about ±"
    )
    # median half-width over the white-box accuracies of 12 trials: float 19-21% or 29-31% (6 each), int8 25% (12)
    half = 100 * (lambda lo, hi: (hi - lo) / 2)(*wilson(0.25, N_IMG))
    assert (
        f"about ±{half:.1f} points, wider than 6 of the 9 accuracy differences in the claims table "
        f"(|effect| < {half:.1f} points)" in images
    )  # b-dp, b-np, c, d, f-cost, f-dp
    assert rounds.startswith("short training: 3 rounds × 1 local epoch(s) = 3 passes over each client's data")
    seeds = scale_warnings(frame(seeds=(1,), rounds=20, n_eval=2000))
    assert seeds == [
        "too few seeds: 4 of 4 settings have fewer than 3 seeds (fewest: 1), so most numbers have no "
        "confidence interval over seeds or a very wide one"
    ]
    assert scale_warnings(frame(rounds=20, n_eval=2000)) == []  # paper-like scale: nothing to say

    full = build_report(frame(seeds=(1,)), tmp_path, only=["overview"])  # warned whichever reports run
    assert [w.split(":")[0] for w in full.warnings] == ["too few seeds", "few images", "short training"]
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# PSREval report — synthetic\n\n> **This sweep's scale cannot support conclusions:**")
    page = (tmp_path / "report.html").read_text()
    assert page.index("<div class='scale'>") < page.index("<table") and "too few seeds: 4 of 4" in page
    assert full.lines()[0].startswith("scale warning: too few seeds")


def test_one_seed_cells_show_the_interval_over_images(tmp_path):
    from psreval_tune.analysis.reports import transfer

    rep = transfer(frame(settings=("none",), seeds=(1,)), tmp_path)
    lo, hi = (100 * v for v in wilson(0.20, N_IMG))  # DP -> DP, seed 1: 20%
    cells = [line for line in (tmp_path / "transfer.md").read_text().splitlines() if "| dp |" in line][0]
    assert f"20.0 [{lo:.1f}, {hi:.1f}] (360 img)" in cells and f"{lo:.1f}" == "16.2"
    assert rep.data["n_img"].eq(N_IMG).all()


# --- accuracy loss on the same images ---------------------------------------------------------------------


def test_accuracy_loss_uses_clean_accuracy_on_the_attacked_images():
    """acc_clean_eval_<target> is 5 points below the whole split's clean accuracy in this frame: the loss
    must be 5 points smaller than the old whole-split computation, and say which it used."""
    from psreval_tune.analysis.reports import LOSS_FALLBACK_NOTE, LOSS_NOTE, adv_training

    trials = frame(settings=("none", "adv_pgd"))
    # (privacy, fraction): clean on the attacked images - white-box PGD accuracy, in points (means over seeds)
    expect = {
        ("DP ε=3.4", 0.2): (80 - 3 - 5) - 30,
        ("DP ε=3.4", 0.0): (80 - 5) - 20,
        ("non-private", 0.2): (95 - 6 - 5) - 10,
        ("non-private", 0.0): (95 - 5) - 10,
    }
    rep = adv_training(trials)
    for (privacy, fraction), loss in expect.items():
        got = rep.data[(rep.data["privacy"] == privacy) & (rep.data["adv_fraction"] == fraction)]
        assert got["mean"].item() == pytest.approx(loss), (privacy, fraction)
    assert LOSS_NOTE in rep.notes and LOSS_FALLBACK_NOTE not in rep.notes

    old = adv_training(trials.drop(columns=[c for c in trials.columns if c.startswith("acc_clean_eval_")]))
    got = old.data[(old.data["privacy"] == "DP ε=3.4") & (old.data["adv_fraction"] == 0.2)]
    assert got["mean"].item() == pytest.approx(expect[("DP ε=3.4", 0.2)] + 5)  # whole split: 5 points more
    assert LOSS_FALLBACK_NOTE in old.notes


# --- docs/reproduction.md ------------------------------------------------------------------------------------


def test_write_reproduction(tmp_path):
    out = write_reproduction(
        frame(),
        tmp_path / "docs" / "reproduction.md",
        tmp_path / "docs" / "reproduction",
        command="python sweeps/reproduce.py --seeds 0,1,2",
        meta={"wall_time_s": 4800, "machine": "2 CPU cores"},
    )
    md = out.read_text()
    assert "```bash\npython sweeps/reproduce.py --seeds 0,1,2\n```" in md
    for line in (
        "- seeds: 3 (0, 1, 2)",
        "- wall time: 80 min (4,800 s)",
        "- machine: 2 CPU cores",
        "- images per trial: 360 attacked; clean accuracy on 360 test images",
        "- rounds: 3; local epochs: 1",
    ):
        assert line in md, line
    assert "> **This sweep's scale cannot support conclusions:**\n>\n> - few images: 360 attacked images" in md
    assert (
        "| c | DP models are not more robust than non-private ones under transfer attacks (within ±2 points) | "
        "digits, resnet9 | +1.5 [-1.0, +4.0] points | within ±2 points | 3 | 360 | inconclusive at this scale |" in md
    )
    assert "![effect and 95% CI per claim](reproduction/claims.png)" in md
    assert (tmp_path / "docs" / "reproduction" / "claims.png").is_file()
    assert len(pd.read_csv(tmp_path / "docs" / "reproduction" / "claims.csv")) == len(CLAIMS)
    # a paragraph for each claim that does not hold or is inconclusive, none for those that hold
    tail = md.split("## Claims that do not hold or are inconclusive")[1]
    assert "**b-np — " in tail and "the whole 95% interval lies outside that range" in tail
    assert "**c — " in tail and "about 18 seeds would clear it" in tail
    assert "**d — " not in tail and "Not measured" not in tail

    md = write_reproduction(frame(settings=("none",)), out, tmp_path / "docs" / "reproduction", "cmd").read_text()
    assert "Not measured: **h** — not measured (needs private trials with threat train_time_attack" in md

"""Robust accuracy as a reviewer counts it (evaluate.py): worst case over restarts, AutoAttack, the
gradient-masking checks and robustness curves, on tiny hand-built models and a few digits images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from psreval_tune import schema
from psreval_tune.attacks import ATTACKS, AttackSpec, generate, transfers
from psreval_tune.evaluate import Attacked, Cell, attack_matrix, curve_area, eps_curve, masking_checks, seeded_subset


# --- worst case over restarts -------------------------------------------------------------------------------------
class _Threshold(nn.Module):
    """Predicts class 0 while the first pixel is below 0.5, else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = (x[:, 0, 0, 0] > 0.5).float()
        return torch.stack([1 - up, up], dim=1)


@pytest.fixture
def one_image_per_restart():
    """A randomised test attack whose restart r (seed r) fools image r only."""

    def build(spec, model, num_classes, seed):
        def attack(x, y):
            adv = x.clone()
            adv[seed % len(x), 0, 0, 0] = 0.9
            return adv

        return attack

    ATTACKS.register("TESTONEPERRUN", order=99, randomized=True, cost_passes=lambda s: 1, uses_alpha=False)(build)
    yield "TESTONEPERRUN"
    ATTACKS.unregister("TESTONEPERRUN")


def test_cell_counts_an_image_robust_only_if_it_survives_every_restart():
    cell = Cell(runs=[torch.tensor([True, True, True, False]), torch.tensor([True, False, True, False])])
    assert cell.run_accuracies() == [0.75, 0.5]
    assert cell.mean() == 0.625
    assert cell.worst() == 0.5  # image 1 fell to the second restart only: not robust
    assert cell.worst() <= cell.mean()


def test_an_image_fooled_by_one_restart_is_not_robust_and_transfer_uses_that_restart(one_image_per_restart):
    x, y = torch.full((8, 1, 4, 4), 0.2), torch.zeros(8, dtype=torch.int64)
    model, other = _Threshold(), _Threshold()
    spec = AttackSpec(one_image_per_restart, 0.7, 0.1, 1)
    m = attack_matrix(
        {"g": model}, {"g": model, "t": other}, x, y, [spec], repeats=3, seed=0, num_classes=2, device="cpu"
    )
    wb, tr = m[(spec.name, "g", "g")], m[(spec.name, "g", "t")]
    assert [int((~r).sum()) for r in wb.runs] == [1, 1, 1]  # each restart fools one image
    assert wb.mean() == pytest.approx(7 / 8)
    assert wb.worst() == pytest.approx(5 / 8)  # images 0, 1, 2 each fell once: none counts as robust
    assert not wb.survivors()[:3].any() and wb.survivors()[3:].all()
    # transfer: per image the examples of the restart that fooled the generator
    assert tr.worst(white_box=False) == pytest.approx(5 / 8)
    assert torch.equal(tr.chosen, wb.survivors())


def test_minimum_norm_attacks_stay_out_of_transfer():
    assert transfers("PGD") and transfers("FGSM") and transfers("APGDCE") and transfers("Square")
    assert not transfers("FAB") and not transfers("AutoAttack")
    assert ATTACKS.get("FAB").minimum_norm


def test_worst_is_at_most_mean_on_a_real_pgd_run(trained_cnn, digits):
    x, y = digits.test.x[:32], digits.test.y[:32]
    spec = AttackSpec("PGD", 16 / 255, 4 / 255, 10)
    m = attack_matrix({"m": trained_cnn}, {"m": trained_cnn}, x, y, [spec], repeats=3, seed=0, num_classes=10,
                      device="cpu")  # fmt: skip
    cell = m[("PGD", "m", "m")]
    assert len(cell.runs) == 3
    assert cell.worst() <= cell.mean() <= max(cell.run_accuracies())
    assert cell.worst() <= min(cell.run_accuracies())
    assert cell.worst(white_box=False) == cell.worst()  # white-box: the fooling restart is the worst case


def test_seeded_subset_is_fixed_and_capped():
    a, b = seeded_subset(100, 10, seed=3), seeded_subset(100, 10, seed=3)
    assert torch.equal(a, b) and len(a) == 10 and len(set(a.tolist())) == 10
    assert not torch.equal(a, seeded_subset(100, 10, seed=4))
    assert torch.equal(seeded_subset(7, 1000, seed=0), torch.arange(7))  # capped by the images there are


# --- new attacks: eps ball, seeds ---------------------------------------------------------------------------------
@pytest.fixture
def small_budgets(monkeypatch):
    """AutoAttack's budgets cut down so a test takes seconds (the algorithms are the same)."""
    from psreval_tune.attacks import apgd, autoattack, fab, square

    for mod in (apgd, autoattack):
        monkeypatch.setattr(mod, "APGD_STEPS", 20)
    for mod in (fab, autoattack):
        monkeypatch.setattr(mod, "FAB_STEPS", 10)
        monkeypatch.setattr(mod, "FAB_TARGETS", 3)
    for mod in (square, autoattack):
        monkeypatch.setattr(mod, "SQUARE_QUERIES", 200)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["APGDCE", "APGDDLR", "Square", "FAB", "AutoAttack"])
def test_new_attacks_stay_in_eps_ball_and_are_seeded(trained_cnn, digits, small_budgets, name):
    x, y = digits.test.x[:12], digits.test.y[:12]
    eps = 16 / 255
    spec = AttackSpec(name, eps, eps / 4, 10)
    adv = generate(trained_cnn, x, y, spec, num_classes=10, seed=1, device="cpu")
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert torch.equal(adv, generate(trained_cnn, x, y, spec, num_classes=10, seed=1, device="cpu"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_autoattack_is_at_least_as_strong_as_pgd_on_the_same_images(trained_cnn, digits, small_budgets):
    """AutoAttack (cut-down budgets: the same four attacks in the same order) <= the headline PGD (worst over
    3 restarts) on the same 16 images. The cycle reports both on its AutoAttack subset (acc_wb_autoattack,
    acc_wb_autoattack_pgd); benchmarks/README.md has the full-budget figures."""
    x, y = digits.test.x[:16], digits.test.y[:16]
    spec = AttackSpec("PGD", 16 / 255, 4 / 255, 10)
    m = attack_matrix({"m": trained_cnn}, {"m": trained_cnn}, x, y, [spec], repeats=3, seed=0, num_classes=10,
                      device="cpu")  # fmt: skip
    pgd = m[("PGD", "m", "m")].worst()
    aa_spec = AttackSpec("AutoAttack", spec.eps, spec.alpha, spec.steps)
    adv = generate(trained_cnn, x, y, aa_spec, num_classes=10, seed=0, device="cpu")
    assert float((adv - x).abs().max()) <= spec.eps + 1e-6
    aa = float((trained_cnn(adv).argmax(1) == y).float().mean())
    assert aa <= pgd, (aa, pgd)


# --- gradient-masking checks --------------------------------------------------------------------------------------
class _RoundInput(nn.Module):
    """Rounds pixels to quarters before the model: its gradient is zero almost everywhere (no
    straight-through estimator), the textbook gradient mask."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 4) / 4)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_masking_checks_flag_a_masking_model_and_not_a_plain_one(trained_cnn, digits, monkeypatch):
    """Seen on 48 images, 16/255: the rounding model keeps 0.875 at eps 0.3 (the plain one 0.0) and Square
    takes it to 0.75 where PGD leaves 0.938. The test asserts the large-eps flag, the robust one."""
    from psreval_tune.attacks import square

    monkeypatch.setattr(square, "SQUARE_QUERIES", 100)
    x, y = digits.test.x[:24], digits.test.y[:24]
    spec = AttackSpec("PGD", 16 / 255, 4 / 255, 10)
    masked = _RoundInput(trained_cnn).eval()
    models = {"nonprivate": Attacked(trained_cnn, trained_cnn, "cpu"), "dp": Attacked(masked, masked, "cpu")}
    both, messages = masking_checks(models, x, y, spec, repeats=1, seed=0, num_classes=10)
    assert both["masking_suspect_large_eps"] == 1 and both["masking_suspect_any"] == 1, both
    assert both["acc_masking_large_eps_dp"] > 0.5 and both["acc_masking_large_eps_nonprivate"] <= 0.05
    assert messages and all(" on dp:" in m for m in messages), messages  # the plain model raises no flag
    assert not schema.unknown(list(both))


# --- robustness curves --------------------------------------------------------------------------------------------
def test_curve_area_is_a_mean_accuracy_over_the_eps_range():
    assert curve_area([0, 1], [1.0, 0.0]) == pytest.approx(0.5)
    assert curve_area([0, 0.1, 0.3], [1.0, 1.0, 1.0]) == pytest.approx(1.0)


@pytest.mark.timeout(60)
def test_eps_curve_falls_to_about_zero(trained_cnn, digits):
    x, y = digits.test.x[:48], digits.test.y[:48]
    spec = AttackSpec("PGD", 8 / 255, 2 / 255, 10)
    grid = (0.0, 8 / 255, 0.3)
    m = eps_curve({"nonprivate": Attacked(trained_cnn, trained_cnn, "cpu")}, x, y, grid, spec, repeats=1, seed=0,
                  num_classes=10)  # fmt: skip
    accs = [m[f"acc_curve_{i}_nonprivate"] for i in range(3)]
    assert accs[0] >= accs[1] >= accs[2]
    assert accs[2] <= 0.05
    assert m["curve_eps_2"] == 0.3 and m["n_curve"] == 48
    assert 0 < m["auc_curve_nonprivate"] < accs[0]
    assert not schema.unknown(list(m))


# --- the Wilson interval ------------------------------------------------------------------------------------------
def test_wilson_interval_is_one_function_within_0_1_with_known_values():
    """evaluate.wilson and analysis.metrics.wilson are intervals.wilson; at p = 0 and p = 1 the bounds stay in
    [0, 1] (rounding put them a hair outside before the analysis' copy clamped) and match the closed form:
    0 successes of n give [0, z^2 / (n + z^2)] (0/10: [0, 0.2775], the textbook value), n of n its mirror."""
    import math

    from psreval_tune import evaluate, intervals
    from psreval_tune.analysis import metrics

    assert evaluate.wilson is intervals.wilson is metrics.wilson
    z2 = intervals.Z95**2
    for n in (1, 10, 32, 359, 1000, 10**6):
        for p in (0.0, 1.0):
            low, high = intervals.wilson(p, n)
            assert 0.0 <= low <= high <= 1.0
        assert intervals.wilson(0.0, n) == (pytest.approx(0.0, abs=1e-12), pytest.approx(z2 / (n + z2), rel=1e-12))
        assert intervals.wilson(1.0, n) == (pytest.approx(n / (n + z2), rel=1e-12), pytest.approx(1.0, abs=1e-12))
    assert intervals.wilson(0.0, 10) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.27753, abs=1e-5))
    assert intervals.wilson(1.0, 10) == (pytest.approx(0.72247, abs=1e-5), pytest.approx(1.0, abs=1e-12))
    assert intervals.wilson(0.5, 100) == (pytest.approx(0.40383, abs=1e-5), pytest.approx(0.59617, abs=1e-5))
    for p, n in ((math.nan, 10), (0.5, 0), (0.5, None), (0.5, math.nan), (math.inf, 10)):
        assert all(math.isnan(b) for b in intervals.wilson(p, n)), (p, n)

"""psreval reproduce's design flags: --epsilons (claims c/d/e per privacy regime), --settings (a cut design),
--attacks, and --dry-run (the plan, nothing started)."""

import argparse

import pytest

from psreval_tune.sweeps import reproduce


def _args(**kw):
    base = dict(settings=list(reproduce.SETTINGS), epsilon=3.4, epsilons=[3.4])
    return argparse.Namespace(**{**base, **kw})


def test_no_threat_setting_runs_at_every_epsilon_the_others_at_one():
    axis = reproduce.settings(_args(epsilons=[1.7, 3.4, 7.0]))
    none = [s["epsilon"] for s in axis if s["threat"] == "none"]
    others = [(s["threat"], s["attack"], s["epsilon"]) for s in axis if s["threat"] != "none"]
    assert none == [1.7, 3.4, 7.0]
    assert others == [
        ("adv_training", "PGD", 3.4),
        ("adv_training", "FGSM", 3.4),
        ("train_time_attack", "PGD", 3.4),
        ("train_time_attack_ref", "PGD", 3.4),  # claim h under the second label rule (issue 21)
    ]
    cut = reproduce.settings(_args(settings=["none"], epsilons=[1.7, 7.0]))
    assert [(s["threat"], s["epsilon"]) for s in cut] == [("none", 1.7), ("none", 7.0)]


def test_dry_run_plans_the_cut_design_and_starts_nothing(tmp_path, capsys):
    argv = ["--dry-run", "--arch", "cnn", "--epsilons", "1.7,3.4", "--settings", "none", "--attacks", "PGD,FGSM"]
    assert reproduce.main([*argv, "--run-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "reproduce on digits (cnn): 6 trials" in out  # 2 epsilons x 3 seeds
    assert "3 distinct non-private twins" in out  # one per seed, shared by its epsilons
    assert not (tmp_path / "runs").exists()


def test_an_unknown_setting_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["--settings", "none,adv", "--dry-run", "--run-dir", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "error: --settings 'adv' is not a setting; expected some of: none, adv_pgd, adv_fgsm, train_time_pgd, "
        "train_time_ref_pgd"
    )


def test_the_regeneration_command_carries_every_design_flag():
    args = argparse.Namespace(
        smoke=False,
        arch="cnn",
        dataset="fashion_mnist",
        seeds=[0, 1],
        epsilon=3.4,
        epsilons=[3.4],
        settings=["none"],
        attacks=["PGD", "FGSM"],
        attack_repeats=1,
    )
    command = reproduce.regenerate_command(args)
    for flag in ("--arch cnn", "--dataset fashion_mnist", "--seeds 0,1", "--settings none", "--attacks PGD,FGSM"):
        assert flag in command, command
    assert command.endswith("--attack-repeats 1"), command
    default = argparse.Namespace(**{**vars(args), "attack_repeats": None})
    assert "--attack-repeats" not in reproduce.regenerate_command(default)

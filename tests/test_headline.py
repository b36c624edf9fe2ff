"""The summary block `psreval run` prints before the full table: the numbers in %, with their intervals."""

from psreval_tune.headline import headline

METRICS = {
    "n_test": 359,
    "n_eval": 64,
    "acc_clean_float": 0.4457,
    "acc_clean_float_ci_low": 0.3951,
    "acc_clean_float_ci_high": 0.4974,
    "acc_clean_int8": 0.448,
    "acc_clean_int8_ci_low": 0.398,
    "acc_clean_int8_ci_high": 0.5,
    "acc_wb_pgd_worst": 0.297,
    "acc_wb_pgd_worst_ci_low": 0.199,
    "acc_wb_pgd_worst_ci_high": 0.418,
    "acc_wb_pgd_int8_bpda_worst": 0.281,
    "epsilon_spent": 3.397,
    "delta": 1e-5,
    "size_reduction_pct": 66.21,
}


def test_headline_gives_percentages_with_their_intervals():
    text = headline(METRICS, ["PGD"])
    lines = text.splitlines()
    assert lines[0].startswith("summary (%, 95% interval over 359 test images; attacks on 64 of them")
    assert "44.6 [39.5, 49.7]" in lines[1] and "int8 44.8 [39.8, 50.0]" in lines[1]
    assert "PGD white-box" in lines[2] and "29.7 [19.9, 41.8]" in lines[2] and "int8 28.1" in lines[2]
    assert "epsilon 3.40 at delta 1e-05" in text
    assert "-66.2% against float" in text


def test_headline_leaves_out_what_the_cycle_did_not_report():
    metrics = {k: v for k, v in METRICS.items() if k not in ("epsilon_spent", "acc_wb_pgd_worst")}
    text = headline(metrics, ["PGD", "FGSM"])
    assert "non-private" in text
    assert "PGD white-box" not in text and "FGSM white-box" not in text  # absent, never shown as 0
    assert "AutoAttack" not in text
    text = headline({**METRICS, "acc_wb_autoattack": 0.25, "n_autoattack": 32}, ["PGD"])
    assert "AutoAttack (32 images)" in text and "25.0" in text

"""The few numbers a researcher reads first after one cycle, in %, each with its 95% interval.

``psreval run`` prints this block before the full table (every metric, as fractions); it only reads metrics
the cycle reported, so a cycle without an attack or without DP shows those rows as absent, never as 0.
"""

from __future__ import annotations

from typing import Any, Mapping


def _pct(metrics: Mapping[str, Any], key: str) -> str | None:
    """``key`` in % with its interval (``key_ci_low``/``key_ci_high``), or None when not reported."""
    value = metrics.get(key)
    if value is None:
        return None
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    interval = f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None and high is not None else ""
    return f"{100 * value:.1f}{interval}"


def _row(label: str, float_text: str | None, int8_text: str | None) -> str | None:
    if float_text is None:
        return None
    return f"  {label:<26} {float_text:<22} int8 {int8_text or '-'}"


def headline(metrics: Mapping[str, Any], attacks: list[str]) -> str:
    """Clean and white-box robust accuracy of the cycle's model and its int8 version (BPDA: gradients
    through the quantizer), privacy spent and the int8 size reduction."""
    n_test, n_eval = metrics.get("n_test"), metrics.get("n_eval")
    lines = [
        f"summary (%, 95% interval over {n_test or '?'} test images; attacks on {n_eval or '?'} of them, "
        "worst over restarts):",
        _row("clean accuracy", _pct(metrics, "acc_clean_float"), _pct(metrics, "acc_clean_int8")),
    ]
    for attack in attacks:
        a = attack.lower()
        lines.append(
            _row(
                f"{attack} white-box", _pct(metrics, f"acc_wb_{a}_worst"), _pct(metrics, f"acc_wb_{a}_int8_bpda_worst")
            )
        )
    if metrics.get("acc_wb_autoattack") is not None:
        lines.append(
            _row(f"AutoAttack ({metrics.get('n_autoattack', '?')} images)", _pct(metrics, "acc_wb_autoattack"), None)
        )
    spent = metrics.get("epsilon_spent")
    privacy = "non-private" if spent is None else f"epsilon {spent:.2f} at delta {metrics.get('delta', float('nan')):g}"
    lines.append(f"  {'privacy':<26} {privacy}")
    if metrics.get("size_reduction_pct") is not None:
        lines.append(f"  {'int8 model size':<26} {-metrics['size_reduction_pct']:+.1f}% against float")
    return "\n".join(line for line in lines if line is not None)

"""The paper's tables and figures, from the tidy trials frame of ``analysis.load``: one module per report.

Each report module has ``<key>_tables(trials) -> Report`` (the numbers and the tables: DataFrames, no
drawing), ``draw_<key>(report, out_dir)`` (matplotlib only there) and ``<key>(trials, out_dir) -> Report``,
which does both and writes its figures (PNG and SVG) and a markdown file into ``out_dir``. ``Report.data``
holds the numbers plotted (one row per bar or point: the grouping columns, ``mean``, ``ci95`` (half-width
of the t-based 95% CI over seeds; NaN when n = 1), ``n``, ``std``). Accuracies are in percent, sizes in MB
(10^6 bytes), times in seconds.

A sweep that does not cover a report's axes gives ``Report.messages`` naming what is missing, and no
figure for it. Attacks come from ``psreval_tune.config.ATTACKS``: a new attack appears in every report.
"""

from __future__ import annotations

from typing import Callable

from .adv_training import LOSS_FALLBACK_NOTE, LOSS_NOTE, accuracy_loss, adv_training
from .base import (
    GENERATORS,
    TARGETS,
    Report,
    Table,
    attack_names,
    config_label,
    markdown_table,
    pooled_note,
    present_attacks,
    privacy_order,
    privacy_order_np_first,
    threat_label,
)
from .claims import claims
from .curves import curves
from .masking import masking
from .overview import overview
from .pareto import pareto
from .robustness import robustness
from .train_time import train_time
from .transfer import transfer

REPORTS: dict[str, Callable[..., Report]] = {
    "overview": overview,
    "transfer": transfer,
    "adv_training": adv_training,
    "train_time": train_time,
    "robustness": robustness,
    "pareto": pareto,
    "curves": curves,
    "masking": masking,
    "claims": claims,
}

__all__ = [
    "GENERATORS",
    "LOSS_FALLBACK_NOTE",
    "LOSS_NOTE",
    "REPORTS",
    "TARGETS",
    "Report",
    "Table",
    "accuracy_loss",
    "adv_training",
    "attack_names",
    "claims",
    "config_label",
    "curves",
    "markdown_table",
    "masking",
    "overview",
    "pareto",
    "pooled_note",
    "present_attacks",
    "privacy_order",
    "privacy_order_np_first",
    "robustness",
    "threat_label",
    "train_time",
    "transfer",
]

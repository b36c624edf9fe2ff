"""The per-trial CSV of a recipe search or check grid, from its Tune folder: each trial's searched or set fields
(a field left to the recipe is empty), validation accuracy per round, whether it completed, and (completed trials
only, read after the selection) its test accuracy.

    .venv/bin/python docs/recipes/search_table.py runs/recipes/ray_results/recipe-fmnist-cnn-dp \
        docs/recipes/fashion_mnist_cnn_dp.csv
"""

import csv
import json
import sys
from pathlib import Path

FIELDS = ("epsilon", "rounds", "local_epochs", "lr", "momentum", "batch_size", "max_grad_norm")


def trial_row(result: Path) -> dict | None:
    lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
    if not lines:
        return None
    last, config = lines[-1], dict(lines[-1]["config"])
    for value in list(config.values()):
        if isinstance(value, dict):  # a pseudo-axis (privacy, setting): its fields are the trial's
            config.update(value)
    vals = list({r["round"]: r["acc_val"] for r in lines if "acc_val" in r and r.get("round")}.values())
    done = len(vals) == config.get("rounds")
    return {
        "trial": last["trial_id"],
        **{k: config.get(k) for k in FIELDS},
        "rounds_run": len(vals),
        "acc_val_per_round": " ".join(f"{v:.3f}" for v in vals),
        "acc_val_final": f"{vals[-1]:.4f}" if vals else "",
        "epsilon_spent": last.get("epsilon_spent", "") if done else "",
        "completed": done,
        "acc_clean_test_read_after": last.get("acc_clean_float", "") if done else "",
    }


def main(folder: str, out: str) -> None:
    rows = [r for r in (trial_row(p) for p in sorted(Path(folder).glob("*/result.json"))) if r]
    rows.sort(key=lambda r: -float(r["acc_val_final"] or 0))
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} trials -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

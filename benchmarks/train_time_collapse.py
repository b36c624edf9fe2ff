"""Why DP models collapse under a train-time attacker on digits (the smoke
report's DP models ended near 9% clean accuracy under a 20% attacker while
non-private ones kept ~48%): per FL round, the global model's validation
accuracy and how concentrated the adversary's poisoned labels are.

    python benchmarks/train_time_collapse.py            # ~5 min on 2 cores; table + results/train_time_collapse.json

The train-time attacker labels its adversarial examples with the global
model's own predictions. If that model predicts one class for nearly every
input, the poisoned data carries a single label. This script measures the
share of the most common poisoned label per round (1.0 = all one class) for
the smoke setting (3 rounds of large steps), the same for 10 rounds, and the
recipe, DP (epsilon 3.4) and non-private, 3 seeds, cnn, 20% attacker (FGSM).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import machine_info, table, write_json

SETTINGS = ("smoke", "smoke-10-rounds", "recipe")


def training(setting: str) -> dict:
    from psreval_tune import recipes

    return {"smoke": dict(recipes.SMOKE), "smoke-10-rounds": {**recipes.SMOKE, "rounds": 10}, "recipe": {}}[setting]


def run(setting: str, epsilon: float | None, seed: int) -> dict:
    from psreval_tune import federated
    from psreval_tune.config import CycleConfig
    from psreval_tune.cycle import _fresh_model
    from psreval_tune.data import load_data

    shares: list[float] = []
    original = federated.predict

    def spy(model, x, *args, **kwargs):  # the adversary's labelling call (Federation._poison)
        y = original(model, x, *args, **kwargs)
        shares.append(float(torch.bincount(y).max()) / len(y))
        return y

    cfg = CycleConfig(
        arch="cnn",
        epsilon=epsilon,
        threat="train_time_attack",
        adv_fraction=0.2,
        attack="FGSM",
        seed=seed,
        device="cpu",
        **training(setting),
    )
    data = load_data(cfg)
    history: list[float] = []
    federated.predict = spy
    try:
        fed = federated.Federation(cfg, _fresh_model(cfg, data), data, "cpu")
        fed.train(lambda r: history.append(r.acc_val))
    finally:
        federated.predict = original
    return {"setting": setting, "epsilon": epsilon, "seed": seed, "acc_val": history, "top_label_share": shares}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, default=3, help="seeds per setting (default: 3)")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/train_time_collapse.json)")
    args = p.parse_args()
    from psreval_tune._warnings import quiet_known_warnings

    quiet_known_warnings()  # Opacus' secure-RNG notice, once per client
    runs = [run(s, e, seed) for s in SETTINGS for e in (3.4, None) for seed in range(args.seeds)]
    rows = []
    for s in SETTINGS:
        for e in (3.4, None):
            sel = [r for r in runs if r["setting"] == s and r["epsilon"] == e]
            rows.append(
                [
                    s,
                    "non-private" if e is None else f"DP eps={e}",
                    statistics.fmean(r["top_label_share"][0] for r in sel),
                    statistics.fmean(statistics.fmean(r["top_label_share"]) for r in sel),
                    statistics.fmean(r["acc_val"][-1] for r in sel),
                    " ".join(f"{r['acc_val'][-1]:.2f}" for r in sel),
                ]
            )
    print(
        table(
            [
                "setting",
                "model",
                "top label share r1",
                "top share, all rounds",
                "final val acc (mean)",
                "final val acc per seed",
            ],
            rows,
        )
    )
    write_json("train_time_collapse", {"machine": machine_info("cpu"), "runs": runs}, args.out)


if __name__ == "__main__":
    main()

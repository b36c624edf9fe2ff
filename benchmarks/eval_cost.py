"""The evaluation seconds a reviewer-grade trial adds (issue 22): AutoAttack, gradient-masking checks, eps grid.

One private cycle per architecture (psreval_tune.run_cycle, the real path: DP model and its non-private twin,
int8 versions of both, no twin cache) with every reviewer option on; the cycle times each part as its own
phase, one after the other, so each added cost is read from its own time_*_s metric:

    default      time_attack_s: the default evaluation, PGD (attack_repeats restarts) and FGSM, generator x
                 target matrix and BPDA white-box on the int8 models, on the attacked images
    autoattack   time_autoattack_s: AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) on the own float
                 model, on --autoattack-samples of the attacked images (--autoattack)
    masking      time_masking_checks_s: PGD, PGD at eps 0.3, PGD with 5x the steps and Square on every model
                 (float and int8, DP and twin) on evaluate.MASKING_IMAGES images (--masking-checks)
    eps_grid     time_eps_curve_s: PGD at every eps of --eps-grid on every model, the attacked images
                 (--attack-eps-grid)

Cycles: digits_cnn and digits_resnet9 (8x8 digits, the whole test split attacked, their recipes, epsilon 3.4).
Override a CycleConfig field of every cycle with --set KEY=VALUE (e.g. --set eval_samples=256).

    .venv/bin/python benchmarks/eval_cost.py                    # both cycles (minutes to tens of minutes on CPU)
    .venv/bin/python benchmarks/eval_cost.py --cycles digits_cnn --set autoattack_samples=200
    .venv/bin/python benchmarks/eval_cost.py --dry              # the code path, tiny: no figure to quote
"""

from __future__ import annotations

import argparse
import json
import time

import _common as common

EPS_GRID = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)  # the example grid
CYCLES = {
    "digits_cnn": dict(dataset="digits", arch="cnn", epsilon=3.4),
    "digits_resnet9": dict(dataset="digits", arch="resnet9", epsilon=3.4),
}
# --dry: the code path in seconds; non-private (no twin), one round on a few images, one restart
DRY = dict(
    epsilon=None, rounds=1, train_samples=256, test_samples=32, eval_samples=16, autoattack_samples=8, attack_repeats=1
)
PARTS = (  # (row, time_*_s phase, what)
    ("default (PGD + FGSM)", "attack", "the default evaluation"),
    ("+ AutoAttack", "autoattack", "added"),
    ("+ masking checks", "masking_checks", "added"),
    ("+ eps grid", "eps_curve", "added"),
)


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value.split(",") if key in ("eval_attacks", "attack_eps_grid") else value
    return out


def _record(name: str, cfg, m: dict, wall: float) -> dict:
    phases = {k[len("time_") : -len("_s")]: v for k, v in m.items() if k.startswith("time_") and k.endswith("_s")}
    default = phases.get("attack", float("nan"))
    parts = {phase: phases.get(phase) for _, phase, _ in PARTS}
    return {
        "cycle": name,
        "config": cfg.to_dict(),
        "images": {
            "attacked": m.get("n_eval"),
            "autoattack": m.get("n_autoattack"),
            "masking": m.get("n_masking"),
            "curve": m.get("n_curve"),
        },
        "eval_seconds": parts,
        "added_pct_of_default": {
            p: round(100 * v / default, 1) for p, v in parts.items() if p != "attack" and v is not None and default
        },
        "added_seconds": round(sum(v for p, v in parts.items() if p != "attack" and v is not None), 3),
        "phases_s": phases,
        "wall_s": round(wall, 3),
        "acc": {k: m.get(k) for k in ("acc_clean_float", "acc_wb_pgd_worst", "acc_wb_autoattack")},
        "masking_suspect_any": m.get("masking_suspect_any"),
    }


def _table(rec: dict) -> str:
    secs, pct = rec["eval_seconds"], rec["added_pct_of_default"]
    imgs = rec["images"]
    images = {"attack": imgs["attacked"], "autoattack": imgs["autoattack"]}
    images.update(masking_checks=imgs["masking"], eps_curve=imgs["curve"])
    rows = [
        [row, secs.get(phase), "-" if phase == "attack" else pct.get(phase), images.get(phase)]
        for row, phase, _ in PARTS
    ]
    rows.append(["all reviewer options", rec["added_seconds"], round(sum(pct.values()), 1), None])
    return common.table(["evaluation", "seconds per trial", "added, % of default", "images"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", default=",".join(CYCLES), help="comma list of " + ", ".join(CYCLES))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a CycleConfig field")
    p.add_argument("--eps-grid", default=",".join(f"{e:.6g}" for e in EPS_GRID), help="comma list of eps (pixels)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--dry", action="store_true", help="the code path only: one round, a few images, digits cnn")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/eval_cost.json)")
    args = p.parse_args()

    from psreval_tune._warnings import quiet_known_warnings
    from psreval_tune.config import CycleConfig
    from psreval_tune.cycle import run_cycle

    quiet_known_warnings()
    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    grid = tuple(float(e) for e in args.eps_grid.split(",") if e)
    names = ["digits_cnn"] if args.dry else [c for c in args.cycles.split(",") if c]
    reviewer = dict(autoattack=True, masking_checks=True, attack_eps_grid=grid, device=args.device)
    records = []
    for name in names:
        if name not in CYCLES:
            p.error(f"--cycles: {name!r} is not one of {', '.join(CYCLES)}")
        fields = {**CYCLES[name], **(DRY if args.dry else {}), **reviewer, **_overrides(args.set)}
        cfg = CycleConfig(**fields)
        print(f"== {name}: {cfg.dataset} {cfg.arch}, epsilon {cfg.epsilon}, {cfg.rounds} rounds", flush=True)
        progress = None if args.quiet else (lambda msg: print("   ", msg, flush=True))
        start = time.perf_counter()
        result = run_cycle(cfg, progress=progress)
        rec = _record(name, cfg, result.metrics, time.perf_counter() - start)
        records.append(rec)
        print(_table(rec), flush=True)
    print()
    for rec in records:
        print(f"{rec['cycle']}:\n{_table(rec)}\n")
    common.write_json(
        "eval_cost_dry" if args.dry and not args.out else "eval_cost",
        {
            "benchmark": "eval_cost",
            "dry": args.dry,
            "machine": common.machine_info(device),
            "settings": {"cycles": names, "eps_grid": list(grid), "set": args.set, "device": args.device},
            "results": records,
        },
        args.out,
    )


if __name__ == "__main__":
    main()

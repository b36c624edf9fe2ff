"""``psreval run [flags]`` (also ``python -m psreval_tune run``): one cycle from the command line.

Flags are generated from CycleConfig's fields (``--adv-fraction`` for
``adv_fraction``), so the CLI can never drift from the config. Bad input
exits with status 2 and one line on stderr, before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Sequence

from . import config, recipes
from .cli_parser import Parser
from .config import ConfigError, CycleConfig
from .deps import check_dependencies
from .headline import headline


def _registry_help() -> dict[str, str]:
    """Help for the fields whose values are registry names: every name listed, from its entry."""
    from .attacks import ATTACKS
    from .datasets import DATASETS
    from .datasets.medmnist import MEDMNIST_SUBSETS
    from .models import ARCHS

    rooted = [e.name for e in DATASETS if e.needs_data_root]
    resizable = [e for e in DATASETS if e.meta.get("resizable")]
    downloadable = [e.name for e in DATASETS if e.meta.get("downloadable")]
    return {
        "dataset": " | ".join(f"{e.name} ({e.help})" for e in DATASETS) + " (psreval_tune/datasets/)",
        "data_root": "folder with the data of " + " | ".join(rooted) + " (see --dataset)",
        "image_size": "image side; none = the dataset's default. "
        + "; ".join(f"{e.name}: {e.meta.get('image_size_help', e.image_size)}" for e in resizable),
        "medmnist_subset": "which MedMNIST set, from its .npz in --data-root: "
        + " | ".join(MEDMNIST_SUBSETS)
        + "; its official val split is the validation split",
        "download": "let torchvision download " + " | ".join(downloadable) + " into --data-root (needs internet)",
        "arch": " | ".join(ARCHS.names()) + " (psreval_tune/models/)",
        "attack": "attack used by the training threat: " + " | ".join(ATTACKS.names()) + " (psreval_tune/attacks/)",
        "eval_attacks": "comma-separated attacks evaluated at inference, of " + " | ".join(ATTACKS.names()),
    }


HELP = {
    **_registry_help(),
    "val_fraction": "share of the training split held out for validation (not for a dataset with its own val split)",
    "train_samples": "training images to use: a random subset of the split, seeded by --seed, for quick runs "
    "(synthetic: how many to draw; none = all)",
    "test_samples": "test images to use: a random subset of the split, seeded by --seed (synthetic: how many to "
    "draw; none = all)",
    "partition": " | ".join(config.PARTITIONS),
    "threat": "who attacks during training: " + " | ".join(config.THREATS) + " (psreval_tune/threats/)",
    "threat_params": "the threat's own parameters as key=value,key=value (see psreval_tune/threats/<name>.py)",
    "num_malicious": "malicious clients under a threat, counted from --adversary-client",
    "epsilon": "target DP epsilon over all rounds; 'none' = non-private",
    "adv_fraction": "share of the training data the malicious clients hold together, in [0, 1); 0 = an equal share",
    "aggregation": "server rule: " + " | ".join(config.AGGREGATIONS) + " (psreval_tune/aggregators/)",
    "aggregation_params": "the rule's own parameters as key=value,key=value (see psreval_tune/aggregators/<name>.py)",
    "bucketing": "bucketing (Karimireddy et al. 2022) around the rule: shuffle the updates, average buckets of "
    "this many (the paper's s = 2), aggregate the bucket means; none = off",
    "client_fraction": "share of clients sampled each round, in (0, 1]",
    "dp_mode": "sample (DP-SGD in every client, sample-level epsilon) | client (DP-FedAvg, client-level epsilon)",
    "client_clip": "dp_mode=client: L2 bound on each client's update",
    "accountant": " | ".join(config.ACCOUNTANTS),
    "grad_sampler": "DP per-sample clipping: auto (book-keeping, same numbers, faster) | opacus (Opacus' hooks)",
    "device": "auto (CUDA if visible) | cpu | cuda",
    "autoattack": "also run AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) on the own float model, "
    "on a fixed seeded subset of --autoattack-samples attacked images -> acc_wb_autoattack",
    "masking_checks": "gradient-masking checks on every model (large eps, 5x PGD steps, gradient-free Square; "
    "int8 models through BPDA) on a small fixed subset -> masking_suspect_<check>",
    "attack_eps_grid": "comma-separated eps (pixel units, 8/255 allowed): PGD robust accuracy at each, for every "
    "model -> acc_curve_<i>_<model>, auc_curve_<model>",
    "precision": "non-private training: fp32 | bf16 (torch.autocast; weights and optimizer stay fp32). "
    "DP training and the attacks stay fp32",
    "num_clients": "clients in the federation (>= 2)",
    "dirichlet_alpha": "--partition dirichlet: concentration of the label skew (smaller = more skewed)",
    "adversary_client": "under a threat, the first malicious client (the --num-malicious clients follow it)",
    "recipe": "auto (the recipe for dataset, arch and privacy in psreval_tune/recipes.toml) or a recipe's name "
    "such as digits/resnet9/dp; a training flag you set always wins",
    "rounds": "FedAvg rounds",
    "local_epochs": "epochs each client trains per round",
    "batch_size": "SGD batch size (under DP: the expected Poisson batch)",
    "lr": "SGD learning rate",
    "momentum": "SGD momentum",
    "lr_schedule": "learning rate over rounds: constant | cosine | step, after --warmup-rounds",
    "warmup_rounds": "rounds of linear learning-rate warm-up",
    "reset_optimizer": "true: each client's momentum starts afresh every round",
    "attack_eps": "attack budget (L-inf, pixel units in [0, 1], e.g. 0.0314 for 8/255), in training and inference",
    "attack_alpha": "step size of iterative attacks (pixel units in [0, 1])",
    "attack_steps": "steps of iterative attacks",
    "delta": "DP delta",
    "max_grad_norm": "DP-SGD per-sample clipping bound",
    "train_twin": "private cycles: also train the non-private twin (the transfer matrix needs it)",
    "eval_samples": "attacked test images: a seeded subset of this many ('none' = the whole test split)",
    "attack_repeats": "runs of attacks with a random start (PGD); robust accuracy is the worst case over them",
    "autoattack_samples": "images AutoAttack runs on (a seeded subset of the attacked images)",
    "int8_lowering": "the int8 model evaluated and attacked: inductor (compiled oneDNN int8 kernels, x86) | "
    "reference (the PT2E graph: int8 weights, fp32 kernels) | auto (inductor when the test split has >= 1M "
    "pixels, where the compile repays itself)",
    "int8_latency": "time float vs int8 at batch 1 and 256 on the CPU -> latency_ms_*, throughput_int8_over_float",
    "seed": "seed of data splits, partition, training and attacks: same seed, same numbers on CPU",
}


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _optional(value: str) -> str | None:
    return None if value.lower() in ("none", "null", "") else value


def _scalar(text: str) -> Any:
    """A key=value value: an integer, a number, true/false, none, or the text itself."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    low = text.lower()
    return True if low in _TRUE[:2] else False if low in _FALSE[:2] else None if low in ("none", "null") else text


def _mapping(name: str, text: str) -> dict[str, Any]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(
                f"--{name.replace('_', '-')}={text!r} is not allowed; expected key=value[,key=value...]"
            )
        out[key.strip()] = _scalar(value.strip())
    return out


def _pixels(text: str) -> float:
    """A number, or a fraction such as 8/255 (eps in pixel units)."""
    num, sep, den = text.partition("/")
    return float(num) / float(den) if sep else float(text)


def _converter(name: str, kind: Any):
    """Parse a flag's text into the field's type, naming the flag on failure."""
    nullable = type(None) in typing.get_args(kind)
    base = next(a for a in typing.get_args(kind) if a is not type(None)) if nullable else kind

    def convert(text: str):
        if nullable and _optional(text) is None:
            return None
        try:
            if base is dict:
                return _mapping(name, text)
            if typing.get_origin(base) is tuple:
                parts = tuple(part.strip() for part in text.split(",") if part.strip())
                return tuple(map(_pixels, parts)) if typing.get_args(base)[0] is float else parts
            if base is bool:
                if text.lower() in _TRUE + _FALSE:
                    return text.lower() in _TRUE
                raise argparse.ArgumentTypeError(
                    f"--{name.replace('_', '-')}={text!r} is not allowed; expected true or false"
                )
            if base is int:
                return int(text)
            if base is float:
                return float(text)
            return text
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--{name.replace('_', '-')}={text!r} is not {'an integer' if base is int else 'a number'}"
            ) from None

    convert.__name__ = getattr(base, "__name__", "value")
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="psreval", description="PSREval cycles: DP + int8 + adversarial FL.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="{run}")
    run = sub.add_parser(
        "run",
        help="run one cycle and write its results",
        description="One cycle without Ray: federated training (DP-SGD if --epsilon), int8 quantization, "
        "white-box and transfer attacks; a results table on stdout and its files in --out.",
    )
    hints = typing.get_type_hints(CycleConfig)
    for f in _flag_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        shown = ",".join(default) if isinstance(default, tuple) else default
        if f.name in recipes.FIELDS:
            shown = "from the recipe, see --recipe"
        elif default is None:
            shown = "none"
        elif isinstance(default, dict):
            shown = "the entry's defaults"
        text = f"{HELP.get(f.name, '')} (default: {shown})".strip()
        if hints[f.name] is bool:  # --download / --no-download
            run.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            run.add_argument(
                flag, type=_converter(f.name, hints[f.name]), default=None, help=text, metavar=f.name.upper()
            )
    run.add_argument(
        "--out", default="runs/cycle", help="output folder: new or empty, or see --overwrite (default: runs/cycle)"
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="let --out be a non-empty folder: replace only the files this program writes "
        "(metrics.json, model_float.pt, model_int8.pt2, adv_examples.png; a private cycle also its twin's "
        "model_float_nonprivate.pt, model_int8_nonprivate.pt2); nothing else is touched",
    )
    run.add_argument(
        "--cache-dir",
        default="runs/cache",
        help="where trained non-private twins are cached; 'none' disables (default: runs/cache)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _flag_fields() -> list[dataclasses.Field]:
    """CycleConfig's user-facing fields (internal bookkeeping fields are init=False or private)."""
    return [f for f in dataclasses.fields(CycleConfig) if f.init and not f.name.startswith("_")]


def config_from_args(args: argparse.Namespace) -> CycleConfig:
    given = {f.name: getattr(args, f.name) for f in _flag_fields() if getattr(args, f.name) is not None}
    return CycleConfig(**given)


# Imported by the cycle (attacks, DP). Found missing before any work, not after training.
def check_locations(args: argparse.Namespace) -> None:
    """--out and --cache-dir, before any work: nothing is created here."""
    from .artifacts import OutputError, check_out_dir, check_writable_dir

    out = Path(args.out).expanduser()
    check_out_dir(args.out, args.overwrite)  # messages name the value as typed
    if _optional(args.cache_dir) is not None:
        cache = Path(args.cache_dir).expanduser()
        check_writable_dir(args.cache_dir, "--cache-dir")
        a, b = cache.resolve(), out.resolve()
        if a == b or b in a.parents:
            raise OutputError(
                f"--cache-dir={args.cache_dir!r} is inside --out={args.out!r}; allowed: a folder "
                "outside the output folder (or --cache-dir none)"
            )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def results_table(metrics: dict[str, Any]) -> str:
    """The headline numbers; everything else is in metrics.json."""
    keys = [
        k
        for k in metrics
        if k.startswith(
            ("acc_clean", "acc_wb", "size_", "epsilon_spent", "noise_multiplier", "sample_rate", "dp_steps")
        )
    ]
    keys += [k for k in metrics if k.startswith("acc_transfer") and k.endswith(("_worst", "_mean"))]
    keys += [k for k in metrics if k.startswith(("masking_suspect_", "auc_curve_", "n_autoattack", "n_masking"))]
    # which int8 model ran (lowered or the reference graph), how it agrees with the reference, how fast it is
    keys += [k for k in metrics if k.startswith(("int8_lowered", "n_int8_lowered", "latency_ms_", "throughput_int8"))]
    keys += [k for k in metrics if k.startswith("time_")]
    width = max(len(k) for k in keys)
    lines = [f"  {k.ljust(width)}  {_fmt(metrics[k])}" for k in keys]
    # a failed gradient-masking check is a warning here; it changes no number above
    lines += [
        f"  WARNING gradient masking suspected: check {k[len('masking_suspect_') :]} failed (evaluate.MASKING_DOC)"
        for k, v in metrics.items()
        if k.startswith("masking_suspect_") and k != "masking_suspect_any" and v
    ]
    return "\n".join(lines)


def _warn_small_data(cfg: CycleConfig):
    """A round hook that prints trial_warnings.small_data once, after the first round (the data as loaded)."""
    from .trial_warnings import of_federation

    said: list[bool] = []

    def hook(_result, fed) -> None:
        if not said:
            said.append(True)
            line = of_federation(cfg, fed)
            if line:
                print(line, file=sys.stderr, flush=True)

    return hook


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ._warnings import quiet_known_warnings

    quiet_known_warnings()
    progress = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    doing = "check the flags and folders"
    try:
        cfg = config_from_args(args)
        out = Path(args.out).expanduser()
        check_locations(args)
        check_dependencies()
        # Imported late: torch and friends take seconds to load, flag errors should not wait.
        from .artifacts import write_outputs
        from .cycle import TwinCache, run_cycle

        cache = None if _optional(args.cache_dir) is None else TwinCache(Path(args.cache_dir).expanduser())
        doing = "run the cycle (reading the data, or the twin cache)"  # what a file error interrupted
        result = run_cycle(cfg, cache=cache, progress=progress, on_round=_warn_small_data(cfg))
        doing = "write the results"
        write_outputs(result, out, overwrite=args.overwrite)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable data, disk full, permissions changed while training: one line
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"error: could not {doing}{where}: {exc.strerror or exc}; nothing in --out={args.out!r} was replaced",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130
    print(f"\nPSREval cycle: dataset={cfg.dataset} arch={cfg.arch} epsilon={cfg.epsilon} threat={cfg.threat}")
    print(headline(result.metrics, list(cfg.eval_attacks)))
    print("\nevery metric (fractions; metrics.json has them all):")
    print(results_table(result.metrics))
    print(f"\nresults: {out}/metrics.json  (weights, int8 weights and adv_examples.png beside it)")
    return 0

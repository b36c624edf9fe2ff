"""Writing a cycle's results: metrics.json, float/int8 weights, image grid; a private trial also its
non-private twin's float/int8 weights (model_float_nonprivate.pt, model_int8_nonprivate.pt2).

Nothing this module did not create in this call is ever deleted:

- a new folder is assembled in a temporary sibling that is renamed into
  place at the end, so it appears whole or not at all;
- an existing folder is written into only when it is empty, or with
  ``overwrite`` (then only the files below are replaced, one atomic
  rename each; anything else in the folder is left alone);
- obviously dangerous targets (``/``, system folders, the home folder, the
  working directory or one of its parents) are refused.

Folders and files get the process umask's permissions, like any other file.
``check_out_dir`` and ``check_writable_dir`` are the checks the CLI runs
before any training; they import nothing heavy.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError
from .hardware import cpu_info

if TYPE_CHECKING:
    from .cycle import CycleResult

ARTIFACTS = ("metrics.json", "model_float.pt", "model_int8.pt2", "adv_examples.png")
# A private trial also keeps its non-private twin (float weights, int8 program): the models of other seeds of
# the same setting serve as separately trained transfer generators after the sweep (psreval_tune/xseed.py).
TWIN_ARTIFACTS = ("model_float_nonprivate.pt", "model_int8_nonprivate.pt2")
OWN_FILES = ARTIFACTS + TWIN_ARTIFACTS  # everything this module writes, and so may replace
# Top-level folders that are never an output folder.
SYSTEM_DIRS = {
    "bin",
    "boot",
    "dev",
    "etc",
    "lib",
    "lib32",
    "lib64",
    "libx32",
    "opt",
    "proc",
    "root",
    "run",
    "sbin",
    "srv",
    "sys",
    "usr",
    "var",
    "tmp",
    "home",
    "mnt",
    "media",
    "snap",
}


class OutputError(ConfigError):
    """An output location cannot be used as asked. One line."""


def _dangerous(resolved: Path) -> str | None:
    """Why ``resolved`` must never be an output folder, or None."""
    cwd = Path.cwd().resolve()
    home = Path.home().expanduser().resolve()
    if resolved == Path(resolved.anchor):
        return "the filesystem root"
    if resolved == home:
        return "your home folder"
    if resolved in home.parents:
        return "a parent of your home folder"
    if resolved == cwd:
        return "the working directory"
    if resolved in cwd.parents:
        return "a parent of the working directory"
    if resolved.parent == Path(resolved.anchor) and resolved.name in SYSTEM_DIRS:
        return "a system folder"
    return None


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable_dir(path: str | os.PathLike, flag: str) -> None:
    """``path`` is (or can be created as) a folder this process may write; nothing is created."""
    p = Path(path).expanduser()
    if p.is_symlink() and not p.exists():
        raise OutputError(f"{flag}={str(path)!r} is a dangling symbolic link; allowed: a folder or a new path")
    if p.exists():
        if not p.is_dir():
            raise OutputError(f"{flag}={str(path)!r} exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError(f"{flag}={str(path)!r} is not writable by this user; allowed: a writable folder")
        return
    anchor = _nearest_existing(p.absolute())
    if not anchor.is_dir():
        raise OutputError(f"{flag}={str(path)!r} cannot be created: {anchor} is not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise OutputError(f"{flag}={str(path)!r} cannot be created: {anchor} is not writable by this user")


def check_out_dir(out: str | os.PathLike, overwrite: bool, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder this module would not write safely."""
    p = Path(out).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"{flag}={str(out)!r} exists and is not a folder")
    reason = _dangerous(p.resolve())
    if reason:
        raise OutputError(
            f"{flag}={str(out)!r} is {reason}; refused: results go into a new or empty folder (e.g. {flag} runs/cycle)"
        )
    check_writable_dir(p, flag)
    if not p.is_dir():
        return
    entries = sorted(e.name for e in os.scandir(p))
    if entries and not overwrite:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputError(
            f"{flag}={str(out)!r} is a non-empty folder ({shown}); allowed: a new or empty folder, "
            f"or --overwrite to replace only this program's files ({', '.join(OWN_FILES)}) in it"
        )
    for name in OWN_FILES:
        target = p / name
        if os.path.lexists(target) and (target.is_symlink() or not target.is_file()):
            raise OutputError(
                f"{flag}={str(out)!r}: {name} in it is not a regular file; --overwrite replaces "
                "only regular files this program writes"
            )


def _make_temp_dir(parent: Path, stem: str) -> Path:
    """A new folder with the umask's permissions (tempfile.mkdtemp would make it 0700)."""
    for _ in range(100):
        path = parent / f".{stem}.{secrets.token_hex(4)}.tmp"
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return path
    raise OutputError(f"cannot create a temporary folder in {parent}")


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# Packages whose version changes the numbers (or, for ray and mlflow, how a trial ran): read from their installed
# metadata, never imported here (the cycle imports neither Ray nor MLflow). None: not installed.
PROVENANCE_PACKAGES = ("torch", "torchvision", "torchao", "opacus", "torchattacks", "numpy", "ray", "mlflow")


def provenance(result: CycleResult) -> dict:
    """What code made these numbers, and when: the package version, the git commit of the checkout psreval_tune
    was imported from ("unknown" for an installed package; git_dirty "true" when it had changes), the versions of
    PROVENANCE_PACKAGES and Python, and the cycle's start (written_at minus time_total_s) and write times, UTC."""
    import platform
    from datetime import datetime, timedelta, timezone
    from importlib.metadata import PackageNotFoundError, version

    from .tracking import source_provenance  # git only: tracking imports MLflow lazily, never at import

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    now = datetime.now(timezone.utc)
    total = result.metrics.get("time_total_s")
    started = now - timedelta(seconds=float(total)) if isinstance(total, (int, float)) and total >= 0 else None
    return {
        **source_provenance(),  # psreval_version, git_commit, git_dirty
        "python": platform.python_version(),
        "packages": {name: installed(name) for name in PROVENANCE_PACKAGES},
        "started_at": started.isoformat(timespec="seconds") if started else None,
        "written_at": now.isoformat(timespec="seconds"),
    }


def summary(result: CycleResult) -> dict:
    return {
        "config": result.config.to_dict(),
        "metrics": {k: _jsonable(v) for k, v in result.metrics.items()},
        "history": result.history,
        "dp": getattr(result, "dp", None),  # which per-sample clipping ran, and why not book-keeping
        "machine": cpu_info(),  # the numbers above depend on the processor's instruction set
        "provenance": provenance(result),  # the code and versions that made them, and when
    }


def example_captions(result: CycleResult) -> dict:
    """What the image grid says: the attack and its budget, the model it was crafted against, and per
    image its true label and the model's prediction on the clean and on the adversarial version."""
    import torch

    cfg, ex = result.config, result.examples
    own = "dp" if cfg.private else "nonprivate"
    model = result.models[own].float_model.eval()
    with torch.no_grad():
        clean, adv = (model(ex[k]).argmax(1).tolist() for k in ("clean", "adversarial"))
    who = f"the DP model (epsilon {cfg.epsilon:g})" if cfg.private else "the non-private model"
    return {
        "title": f"{cfg.eval_attacks[0]} at {255 * cfg.attack_eps:g}/255 (white-box) against {who}",
        "true": ex["labels"].tolist(),
        "clean": clean,
        "adversarial": adv,
    }


def save_image_grid(result: CycleResult, path: Path) -> None:
    """Top row clean test images, bottom row their adversarial versions, each captioned with its true
    label and the model's prediction (red where the attack changed a correct prediction)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    ex, cap = result.examples, example_captions(result)
    n = len(cap["true"])
    fig = Figure(figsize=(1.3 * n, 3.4))
    axes = fig.subplots(2, n, squeeze=False)
    for row, key in enumerate(("clean", "adversarial")):
        for i, ax in enumerate(axes[row]):
            img = ex[key][i].detach().cpu().permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            fooled = key == "adversarial" and cap["clean"][i] == cap["true"][i] != cap[key][i]
            label = f"true {cap['true'][i]}\npred {cap[key][i]}" if row == 0 else f"pred {cap[key][i]}"
            ax.set_title(label, fontsize=8, color="red" if fooled else "black")
        axes[row][0].set_ylabel(key, fontsize=9)
    fig.suptitle(cap["title"], fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def _write_files(result: CycleResult, folder: Path) -> None:
    import torch

    from .quantize import save_int8

    own = "dp" if result.config.private else "nonprivate"
    model = result.models[own]
    torch.save(model.float_model.state_dict(), folder / "model_float.pt")
    # the int8 model as a torch.export program: loads without this package's model code,
    # and without pickle (quantize.load_int8)
    save_int8(model.int8_model, folder / "model_int8.pt2")
    twin = result.models.get("nonprivate") if own == "dp" else None
    if twin is not None and twin.int8_model is not None:  # a private trial's twin, same formats
        torch.save(twin.float_model.state_dict(), folder / TWIN_ARTIFACTS[0])
        save_int8(twin.int8_model, folder / TWIN_ARTIFACTS[1])
    save_image_grid(result, folder / "adv_examples.png")
    with open(folder / "metrics.json", "w") as fh:
        json.dump(summary(result), fh, indent=2, sort_keys=True)


def write_outputs(result: CycleResult, out_dir: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write the cycle's four files (a private trial with a twin: also ``TWIN_ARTIFACTS``) into ``out_dir``
    (see the module docstring for what is refused).

    ``overwrite=False`` refuses a non-empty folder; ``True`` (the library's default, which a
    retried trial relies on) replaces only the files this function writes."""
    out = Path(out_dir).expanduser()
    check_out_dir(out, overwrite)
    if out.is_dir():
        tmp = _make_temp_dir(out, "psreval-out")
        try:
            _write_files(result, tmp)
            for name in OWN_FILES:
                if os.path.lexists(tmp / name):  # the twin's files: private trials only
                    os.replace(tmp / name, out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder, nothing else
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(out.parent, out.name)
    try:
        _write_files(result, tmp)
        try:
            os.rename(tmp, out)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise OutputError(
                    f"--out={str(out_dir)!r} appeared while the cycle ran and is not empty; nothing in it was touched"
                ) from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

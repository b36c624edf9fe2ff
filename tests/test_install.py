"""A new user's install: the package as a wheel in a fresh venv, used from an unrelated directory.

`pip install 'psreval_tune-*.whl[all]'` plus the one documented torchattacks command must give a working
`psreval run`, `psreval grid` and `psreval report`, with nothing read from the checkout. Without torchattacks,
`psreval run` stops in seconds with one line naming the install command, before any training.

How the venv is made, and why it stands for a real install. `pip install wheel[all]` into a fresh venv took
~110 s of this file's ~230 s (idle machine): unpacking torch, Ray and MLflow, the tool's first imports then
byte-compiling them. Even resolving `wheel[all]` against the local indexes alone (`pip install --dry-run
--report`) cost ~27 s of CPU here (it evaluates 112k index links). Instead:

* the wheel is built from this checkout and installed for real (its files, its `psreval` script) into a venv
  made with --without-pip (no pip, no setuptools of its own: the tool needs neither);
* its dependencies are the closure of the wheel's own Requires-Dist with the [all] extra (read from the
  built wheel's METADATA, i.e. from pyproject.toml), followed through each dependency's Requires-Dist and
  extras; every requirement on the way must be met by the version installed in the suite's .venv (`make`),
  else the fixture fails naming it. On this machine that closure is the very set of 108 distributions
  `pip install --dry-run --report wheel[all]` resolves (measured 2026-12-07; the only version it picked
  differently was pandas 3.1.2 for the pinned 3.1.1);
* exactly those distributions are made visible to the venv: their top-level files are symlinked into one
  folder (file by file where a folder is shared with a distribution outside the closure) that a .pth file
  puts on the venv's sys.path (their own .pth files, e.g. setuptools' distutils hook, are linked beside it).
  A .pth path entry is not itself a site dir, so the .venv's other .pth files (the checkout's editable
  finder) are never read. Nothing else of the .venv is visible: not torchattacks, not psreval_tune from the
  checkout, not pytest, robustbench or any other package the .venv holds beyond the declared closure.

So (a) a module the tool imports from a package pyproject.toml does not declare (directly or through a
declared package) raises ImportError in these runs, the Ray workers' included, exactly as after a real
install; the probe also asserts the venv sees the closure, the wheel and torchattacks, nothing more. (b) the
probe runs from an unrelated folder and asserts that psreval_tune and every sys.path entry lie outside the
checkout and that the cycle's provenance says "unknown" (no git checkout around the package). (c) the
torchattacks case is real: find_spec finds no torchattacks anywhere on that sys.path. (d) a cycle, a grid and
a report run from the installed package; the grid is the shipped smoke grid read from the wheel, with its
three threat settings (every code path of `psreval grid --smoke`) at one epsilon instead of two (3 trials,
not 6), and --no-report, the report being written once by `psreval report`. test_wheel_holds_every_package_file
checks that every tracked file of psreval_tune/ is in the wheel, so no module or data file of a path these runs
do not take can be missing from an install.

Not proven any more: that pip resolves wheel[all] against the package indexes (the closure proves the
declared requirements are jointly satisfiable by the pinned versions, all installed from those indexes by
`make`), that the tool runs on the newest versions pip would pick rather than requirements.txt's pins, and
the dependencies' files outside site-packages (their bin/ scripts: the tool runs none). The venv has no pip of
its own (the suite's pip installs the wheel and torchattacks into it with --python), and the cycle trains with
fast flags (1 round, 1 local epoch, batch 128) instead of the digits recipe: it proves the cycle runs installed,
the recipes' numbers are other tests' business.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
TORCHATTACKS = re.search(r"^TORCHATTACKS := (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
SITE = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def _env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PSREVAL_", "MLFLOW_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"{time.monotonic() - start:6.1f} s  {' '.join(Path(c).name if c.startswith('/') else c for c in cmd)}")
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _pip_install(venv: Path, args: list[str], cwd: Path) -> None:
    """pip (this interpreter's) installing into ``venv``, which has none of its own."""
    cmd = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", *args]
    _run(cmd, cwd, _env(venv), 300)


def _installed() -> dict[str, metadata.Distribution]:
    """The distributions of the suite's interpreter (the .venv), by canonical name."""
    out: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        out.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return out


def _closure(wheel: Path, extras: set[str], have: dict[str, metadata.Distribution]) -> set[str]:
    """Canonical names of the distributions `pip install wheel[extras]` needs: the wheel's Requires-Dist and then
    each dependency's, markers evaluated with the extras asked of it, each met by the version in ``have``."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(name).decode())
    own = canonicalize_name(meta["Name"])
    need: set[str] = set()
    unmet: list[str] = []
    done: set[tuple[str, frozenset[str]]] = set()
    todo = [(own, frozenset(extras), meta.get_all("Requires-Dist") or [])]
    while todo:
        parent, asked, requires = todo.pop()
        if (parent, asked) in done:
            continue
        done.add((parent, asked))
        for text in requires:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in asked | {""}):
                continue
            dep = canonicalize_name(req.name)
            if dep == own:  # psreval-tune[all] = psreval-tune[tune,analysis]
                todo.append((own, asked | frozenset(req.extras), meta.get_all("Requires-Dist") or []))
                continue
            dist = have.get(dep)
            if dist is None or not req.specifier.contains(dist.version, prereleases=True):
                unmet.append(f"{req} (from {parent}): {'not installed' if dist is None else dist.version}")
                continue
            need.add(dep)
            todo.append((dep, frozenset(req.extras), dist.requires or []))
    assert not unmet, "the .venv does not meet the wheel's requirements (run make):\n" + "\n".join(unmet)
    return need


def _link(names: set[str], have: dict[str, metadata.Distribution], dest: Path, site: Path) -> None:
    """Symlink the installed files of the distributions ``names`` into ``dest``; their top-level .pth into
    ``site``."""
    src = Path(sys.prefix) / SITE
    owners: dict[str, set[str]] = {}
    for name, dist in have.items():
        for f in dist.files or ():
            if f.parts[0] != "..":  # outside site-packages (bin/ scripts): the tool runs no dependency's command
                owners.setdefault(f.parts[0], set()).add(name)
    dest.mkdir()
    for top, by in owners.items():
        if by <= names:  # the whole entry is the closure's: one link
            os.symlink(src / top, dest / top)
            if top.endswith(".pth"):
                os.symlink(src / top, site / top)
        elif by & names:  # shared with a distribution outside the closure (a namespace, __pycache__): file by file
            for name in by & names:
                for f in have[name].files or ():
                    if f.parts[0] == top and not (dest / f).exists():
                        (dest / f).parent.mkdir(parents=True, exist_ok=True)
                        os.symlink(src / f, dest / f)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(ROOT)]
    _run(cmd, tmp, _env(Path(sys.executable).parent), 300)
    return next(tmp.glob("psreval_tune-*.whl"))


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A venv holding the wheel, seeing exactly the distributions its [all] extras need (no torchattacks yet)."""
    tmp = tmp_path_factory.mktemp("install")
    start = time.monotonic()
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, _env(Path(sys.executable).parent), 120)
    have = _installed()
    deps = _closure(wheel, {"all"}, have)
    (venv / SITE / "00-dependencies.pth").write_text(f"{tmp / 'deps'}\n")  # before the deps' own .pth files
    _link(deps, have, tmp / "deps", venv / SITE)
    (tmp / "deps.json").write_text(json.dumps(sorted(deps)))
    _pip_install(venv, ["--no-deps", str(wheel)], tmp)
    print(f"venv of the wheel and {len(deps)} linked dependencies: {time.monotonic() - start:.1f} s")
    return venv


def test_wheel_holds_every_package_file(wheel):
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "psreval_tune"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    with zipfile.ZipFile(wheel) as z:
        shipped = set(z.namelist())
    assert len(tracked) > 100
    assert not [f for f in tracked if f and f not in shipped]


def test_missing_torchattacks_is_one_line_before_any_training(venv, tmp_path):
    env = _env(venv)
    start = time.monotonic()
    proc = subprocess.run(
        [str(venv / "bin" / "psreval"), "run", "--rounds", "1", "--out", "r"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: the torchattacks package is not installed; install it with: pip install --no-deps {TORCHATTACKS} "
        "(see README, Install choices)"
    ]
    assert seconds < 10, f"took {seconds:.1f} s"
    assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir())


PROBE = """
import json, sys
from importlib import metadata
import psreval_tune, psreval_tune.analysis, psreval_tune.sweeps.engine
dists = [d.metadata["Name"] for d in metadata.distributions()]
print(json.dumps({"file": psreval_tune.__file__, "path": sys.path, "dists": dists}))
"""


@pytest.mark.ray
def test_installed_tool_runs_a_cycle_a_grid_and_a_report_from_anywhere(venv, wheel, tmp_path):
    env = _env(venv)
    psreval = str(venv / "bin" / "psreval")
    _pip_install(venv, ["--no-deps", TORCHATTACKS], tmp_path)
    work = tmp_path / "elsewhere"  # nothing of the checkout here or on sys.path
    work.mkdir()
    probe = json.loads(_run([str(venv / "bin" / "python"), "-c", PROBE], work, env, 120).stdout)
    assert probe["file"].startswith(str(venv)) and str(ROOT) not in os.path.realpath(probe["file"])
    assert not [p for p in probe["path"] if p and str(ROOT) in p], probe["path"]
    declared = json.loads((venv.parent / "deps.json").read_text())
    assert sorted(canonicalize_name(d) for d in probe["dists"]) == sorted(
        [*declared, "psreval-tune", canonicalize_name(TORCHATTACKS.split("==")[0])]
    )

    _run(
        [psreval, "run", "--rounds", "1", "--local-epochs", "1", "--batch-size", "128", "--lr", "0.2"]
        + ["--eval-samples", "32", "--attack-repeats", "1", "--eval-attacks", "FGSM", "--out", "cycle"],
        work,
        env,
        600,
    )
    assert json.loads((work / "cycle" / "metrics.json").read_text())["provenance"]["git_commit"] == "unknown"

    # the shipped smoke grid, as the wheel holds it, cut to one epsilon and its first and last threat settings
    # (2 trials, not 6: one wave on 2 cores)
    with zipfile.ZipFile(wheel) as z:
        smoke = yaml.safe_load(z.read("psreval_tune/sweeps/files/paper_smoke.yaml"))
    smoke["axes"]["epsilon"] = smoke["axes"]["epsilon"][:1]
    assert len(smoke["axes"]["setting"]) == 3
    smoke["axes"]["setting"] = [smoke["axes"]["setting"][0], smoke["axes"]["setting"][-1]]
    (work / "smoke.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    _run([psreval, "grid", "smoke.yaml", "--name", "smoke", "--no-report"], work, env, 900)
    assert (work / "runs" / "mlflow.db").is_file()

    report = _run([psreval, "report", "--sweep", "smoke", "--out", "report"], work, env, 300)
    assert (work / "report" / "report.html").is_file(), report.stdout
    assert not (work / "mlruns").exists()

"""--out and --cache-dir: nothing the program did not create is ever deleted, and every
location problem is one line before any training.

The CLI tests run ``psreval run`` without --quiet: a refusal before training shows as a
stderr that is exactly the one error line (no "data: ..." progress). They run
psreval_tune.console.main in this process (tests/cli_harness.py: a ``psreval`` process
costs ~1.5 s to refuse); test_real_process_agrees runs one of them as a real process.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from cli_harness import finish, in_process, start

from psreval_tune import artifacts
from psreval_tune.artifacts import ARTIFACTS, OutputError, check_out_dir, check_writable_dir, write_outputs

REPO = Path(__file__).resolve().parents[1]
FAST = [
    "--rounds",
    "2",
    "--eval-samples",
    "16",
    "--attack-repeats",
    "1",
    "--eval-attacks",
    "FGSM",
    "--device",
    "cpu",
    "--train-samples",
    "300",
    "--test-samples",
    "64",
]


@pytest.fixture
def run(monkeypatch, capfd):
    """`psreval run FLAGS` in CWD (default: the repository) with ENV added: (outcome, seconds)."""

    def call(*flags: str, cwd: Path = REPO, env: dict | None = None):
        begin = time.monotonic()
        result = in_process(["run", *flags], monkeypatch, capfd, cwd=cwd, env=env)
        return result, time.monotonic() - begin

    return call


def _one_line(result, *texts: str) -> str:
    assert result.code == 2, (result.code, result.err[-2000:])
    assert "Traceback" not in result.out + result.err
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err[-2000:]
    for text in texts:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.timeout(60)
def test_non_empty_out_is_refused_before_training(tmp_path, run):
    out = tmp_path / "results"
    (out / "notes").mkdir(parents=True)
    (out / "thesis.tex").write_text("years of work")
    (out / "notes" / "a.txt").write_text("keep")
    (out / "metrics.json").write_text("{}")  # even a file of ours is not replaced without --overwrite
    before = _tree(out)
    result, seconds = run(*FAST, "--out", str(out), "--cache-dir", "none")
    _one_line(result, repr(str(out)), "non-empty folder", "--overwrite")
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no temporary sibling either
    assert seconds < 30


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "target, why",
    [
        (".", "the working directory"),
        ("..", "a parent of the working directory"),
        ("~", "your home folder"),
        ("/", "the filesystem root"),
        ("/usr", "a system folder"),
    ],
)
def test_dangerous_out_is_refused_even_with_overwrite(tmp_path, run, target, why):
    home = tmp_path / "home"
    work = home / "src" / "project"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("mine")
    result, _ = run(*FAST, "--out", target, "--overwrite", "--cache-dir", "none", cwd=work, env={"HOME": str(home)})
    _one_line(result, repr(target), why)
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in work.parent.iterdir()) == ["project"]
    assert sorted(p.name for p in home.iterdir()) == ["src"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_location_under_a_file_is_refused_before_training(tmp_path, run, flag):
    """Old code trained first, then tracebacked creating the folder (cache: after the DP and twin runs)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bad = str(blocker / "sub")
    other = ["--cache-dir", str(tmp_path / "cache")] if flag == "--out" else ["--out", str(tmp_path / "out")]
    result, seconds = run(*FAST, "--epsilon", "7", flag, bad, *other)
    _one_line(result, f"{flag}={bad!r}", "is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert seconds < 30


@pytest.mark.timeout(60)
def test_cache_dir_that_is_a_file_is_refused(tmp_path, run):
    cache = tmp_path / "cache"
    cache.write_text("x")
    result, _ = run(*FAST, "--epsilon", "7", "--cache-dir", str(cache), "--out", str(tmp_path / "out"))
    _one_line(result, f"--cache-dir={str(cache)!r}", "not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


@pytest.mark.timeout(60)
def test_real_process_agrees(tmp_path, run):
    """`psreval run --out ~ --overwrite` as a real process (the console script) in a project folder of a
    HOME of its own: the exit status and the one line it gives in this process, nothing touched."""
    home = tmp_path / "home"
    work = home / "src" / "project"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("mine")
    flags = [*FAST, "--out", "~", "--overwrite", "--cache-dir", "none"]
    here, _ = run(*flags, cwd=work, env={"HOME": str(home)})
    there = finish(start(["run", *flags], work, {"HOME": str(home)}))
    line = _one_line(there, "'~'", "your home folder")
    assert (there.code, there.err, there.out) == (here.code, here.err, here.out) == (2, line + "\n", "")
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in home.iterdir()) == ["src"]


def test_unwritable_locations_are_refused(tmp_path, monkeypatch):
    """os.access says no (as for a non-root user on a read-only folder): both checks refuse, nothing created."""
    monkeypatch.setattr(artifacts.os, "access", lambda path, mode: False)
    existing = tmp_path / "ro"
    existing.mkdir()
    with pytest.raises(OutputError, match=r"--out=.*ro' is not writable by this user"):
        check_out_dir(existing, overwrite=False)
    with pytest.raises(OutputError, match=r"--cache-dir=.*new/deeper' cannot be created: .* is not writable"):
        check_writable_dir(existing / "new" / "deeper", "--cache-dir")
    assert list(existing.iterdir()) == []


class _FakeResult:
    """Enough of a CycleResult for write_outputs when its file writer is replaced."""


def _fake_writer(payload: str):
    def write(result, folder: Path) -> None:
        for name in ARTIFACTS:
            (folder / name).write_text(payload)

    return write


def test_write_outputs_new_folder_has_umask_permissions(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "_write_files", _fake_writer("1"))
    old = os.umask(0o022)
    try:
        out = write_outputs(_FakeResult(), tmp_path / "deep" / "out", overwrite=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert all(stat.S_IMODE((out / n).stat().st_mode) == 0o644 for n in ARTIFACTS)
    assert sorted(os.listdir(out)) == sorted(ARTIFACTS)
    assert os.listdir(tmp_path / "deep") == ["out"]


def test_write_outputs_overwrite_replaces_only_its_files(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    (out / "sub").mkdir()
    (out / "sub" / "deep.txt").write_text("more user data")
    (out / "metrics.json").write_text("old")
    monkeypatch.setattr(artifacts, "_write_files", _fake_writer("new"))
    with pytest.raises(OutputError, match="non-empty folder"):
        write_outputs(_FakeResult(), out, overwrite=False)
    assert (out / "metrics.json").read_text() == "old"
    write_outputs(_FakeResult(), out, overwrite=True)
    assert (out / "mine.txt").read_text() == "user data"
    assert (out / "sub" / "deep.txt").read_text() == "more user data"
    assert all((out / n).read_text() == "new" for n in ARTIFACTS)
    assert sorted(os.listdir(out)) == sorted([*ARTIFACTS, "mine.txt", "sub"])  # no temporary folder left


def test_write_outputs_failure_leaves_existing_folder_untouched(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data")

    def broken(result, folder):
        (folder / "metrics.json").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts, "_write_files", broken)
    with pytest.raises(OSError):
        write_outputs(_FakeResult(), out, overwrite=True)
    assert sorted(os.listdir(out)) == ["mine.txt"]
    with pytest.raises(OSError):
        write_outputs(_FakeResult(), tmp_path / "new", overwrite=False)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_missing_optional_dependency_is_found_before_work(tmp_path, monkeypatch, capsys):
    """torchattacks is installed with --no-deps by hand; without it the CLI and the sweeps stop at once."""
    import importlib.util

    from psreval_tune import cli
    from psreval_tune.sweeps.engine import parser

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchattacks" else real(name, *a)
    )
    assert cli.main(["run", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: the torchattacks package is not installed; install it with: pip install --no-deps "
        "torchattacks==3.5.1 (see README, Install choices)"
    ]
    with pytest.raises(SystemExit) as info:
        parser("x").parse_args(["--smoke", "--run-dir", str(tmp_path / "runs")])
    assert info.value.code == 2 and "torchattacks" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_file_error_during_the_cycle_names_the_cycle_not_the_writing(tmp_path, monkeypatch, capsys):
    """A read error the loaders do not catch (a file vanishing or losing permissions mid-run) is not called a
    failure to write the results; nothing is written."""
    from psreval_tune import cli, cycle

    def unreadable(*_a, **_k):
        raise PermissionError(13, "Permission denied", "/data/train-images-idx3-ubyte")

    monkeypatch.setattr(cycle, "run_cycle", unreadable)
    out = tmp_path / "out"
    assert cli.main(["run", "--quiet", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: could not run the cycle (reading the data, or the twin cache) (/data/train-images-idx3-ubyte): "
        f"Permission denied; nothing in --out={str(out)!r} was replaced"
    ]
    assert not out.exists()


def test_psreval_run_warns_when_the_data_are_too_small_for_its_intervals(tmp_path, monkeypatch, capsys):
    """The console line a sweep trial shows (trial_warnings.small_data), for a single cycle too."""
    from types import SimpleNamespace

    from psreval_tune import cli, cycle

    clients = [SimpleNamespace(y_clean=[0] * 3), SimpleNamespace(y_clean=[0] * 900)]
    fed = SimpleNamespace(data=SimpleNamespace(test=[0] * 5), clients=clients)

    def tiny_cycle(cfg, *, on_round, **_kw):
        on_round(None, fed)
        on_round(None, fed)  # said once, not per round
        raise PermissionError(13, "Permission denied", "/stop-here")  # end before any output

    monkeypatch.setattr(cycle, "run_cycle", tiny_cycle)
    cli.main(["run", "--quiet", "--batch-size", "64", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    warning, _error = capsys.readouterr().err.splitlines()
    assert warning == (
        "! data too small for the intervals: 5 test images (fewer than 100: a 95% interval spans up to ±44 points); "
        "client 0 holds 3 examples, fewer than the batch size 64"
    )

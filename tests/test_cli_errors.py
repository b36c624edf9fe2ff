"""Bad input through the CLI, as a user would meet it.

Every case runs ``psreval run ...`` and must end with exit status 2, exactly
one ``error: ...`` line on stderr naming the bad value, no traceback, and
nothing written: neither the --out folder nor the temporary sibling it is
assembled in, nor the twin cache, nor anything in the working directory.

Speed: a ``psreval`` process costs 1.5-5 s here (argparse, then torch), so
the cases run psreval_tune.console.main in this process (tests/cli_harness.py:
exit status, file descriptors 1 and 2, Python's default warning filters, the
global state put back); test_real_processes_agree runs a few of them as real
``psreval`` processes and checks that they end the same way.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from cli_harness import Outcome, finish, in_process, start
from PIL import Image

pytestmark = pytest.mark.slow  # cycles up to data loading and the accountant, a few real `psreval` processes
# Tiny settings, so a case that gets as far as training fails (or would
# finish) within seconds. --quiet: progress lines go to stderr by design
# (README), and a few values can only be rejected after the "data: ..."
# line; test_progress_then_one_error_line covers that case without it.
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
    "--quiet",
]


# --- data folders the cases point at ------------------------------------------------


def _pneumonia(root: Path) -> Path:
    for part in ("train", "test"):
        for name, grey in (("NORMAL", 200), ("BACTERIA", 40), ("VIRUS", 120)):
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("L", (24, 24), grey).save(folder / f"img{i}.jpeg")
    return root


def _cifar10(root: Path) -> Path:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as fh:
            pickle.dump(
                {
                    "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                    "labels": [int(v) for v in rng.integers(0, 10, 4)],
                },
                fh,
            )
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, fh)
    return root


def missing_root(d: Path) -> str:
    return str(d / "no-such-folder")


def empty_root(d: Path) -> str:
    (d / "empty").mkdir()
    return str(d / "empty")


def no_class_folders(d: Path) -> str:
    (d / "xray" / "train").mkdir(parents=True)
    (d / "xray" / "test").mkdir()
    return str(d / "xray")


def one_class_folder(d: Path) -> str:
    root = _pneumonia(d / "xray")
    for part in ("train", "test"):
        for name in ("BACTERIA", "VIRUS"):
            for f in (root / part / name).iterdir():
                f.unlink()
            (root / part / name).rmdir()
    return str(root)


def corrupt_image(d: Path) -> str:
    root = _pneumonia(d / "xray")
    (root / "train" / "VIRUS" / "broken.jpeg").write_bytes(b"definitely not a jpeg\x00" * 50)
    return str(root)


def corrupt_cifar(d: Path) -> str:
    root = _cifar10(d / "cifar")
    (root / "cifar-10-batches-py" / "data_batch_4").write_bytes(b"garbage where a pickle should be")
    return str(root)


def cifar_without_batches(d: Path) -> str:
    root = _cifar10(d / "cifar")
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    return str(root)


# A case: flags, and the texts its one error line must contain. "{root}" in
# either is replaced by the data folder that the case's builder returns.
Builder = Callable[[Path], str]
CASES: list = [
    # choices
    pytest.param(["--dataset", "imagenet"], ["dataset", "imagenet", "digits"], None, id="unknown-dataset"),
    pytest.param(["--arch", "vgg16"], ["arch", "vgg16", "resnet9"], None, id="unknown-arch"),
    pytest.param(["--attack", "CW"], ["attack", "CW", "PGD"], None, id="unknown-attack"),
    pytest.param(["--eval-attacks", "FGSM,DeepFool"], ["eval_attacks", "DeepFool"], None, id="unknown-eval-attack"),
    pytest.param(["--threat", "poison"], ["threat", "poison", "train_time_attack"], None, id="unknown-threat"),
    pytest.param(["--partition", "shards"], ["partition", "shards", "dirichlet"], None, id="unknown-partition"),
    # numbers out of range
    pytest.param(["--epsilon", "0"], ["epsilon", "0", "> 0"], None, id="epsilon-zero"),
    pytest.param(["--epsilon", "-1"], ["epsilon", "-1", "> 0"], None, id="epsilon-negative"),
    pytest.param(["--epsilon", "nan"], ["epsilon", "nan"], None, id="epsilon-nan"),
    pytest.param(["--delta", "0"], ["delta", "0", "(0, 1)"], None, id="delta-zero"),
    pytest.param(["--delta", "1.5"], ["delta", "1.5", "(0, 1)"], None, id="delta-above-one"),
    pytest.param(["--adv-fraction", "1.0"], ["adv_fraction", "1.0", "[0, 1)"], None, id="adv-fraction-one"),
    pytest.param(["--adv-fraction", "-0.1"], ["adv_fraction", "-0.1", "[0, 1)"], None, id="adv-fraction-negative"),
    pytest.param(
        ["--threat", "adv_training"],
        ["adv_fraction", "0", "threat=adv_training"],
        None,
        id="threat-without-adv-fraction",
    ),
    pytest.param(["--num-clients", "1"], ["num_clients", "1", ">= 2"], None, id="one-client"),
    pytest.param(["--attack-eps", "2"], ["attack_eps", "2", "(0, 1]"], None, id="attack-eps-above-one"),
    # flags argparse rejects
    pytest.param(["--rounds", "abc"], ["--rounds", "abc", "integer"], None, id="non-numeric-rounds"),
    pytest.param(["--lr", "fast"], ["--lr", "fast", "number"], None, id="non-numeric-lr"),
    pytest.param(["--frobnicate", "3"], ["--frobnicate"], None, id="unknown-flag"),
    # data on disk
    pytest.param(["--dataset", "cifar10"], ["data_root", "--data-root"], None, id="cifar10-without-data-root"),
    pytest.param(
        ["--dataset", "cifar10", "--data-root", "{root}"],
        ["{root}", "does not exist"],
        missing_root,
        id="missing-data-folder",
    ),
    pytest.param(
        ["--dataset", "cifar10", "--data-root", "{root}"],
        ["{root}", "no CIFAR-10 data"],
        empty_root,
        id="empty-cifar-folder",
    ),
    pytest.param(
        ["--dataset", "cifar10", "--data-root", "{root}"],
        ["{root}", "no CIFAR-10 data"],
        cifar_without_batches,
        id="cifar-missing-test-batch",
    ),
    pytest.param(
        ["--dataset", "cifar10", "--data-root", "{root}"],
        ["{root}", "corrupt CIFAR-10"],
        corrupt_cifar,
        id="corrupt-cifar-batch",
    ),
    pytest.param(
        ["--dataset", "pneumonia", "--data-root", "{root}"],
        ["{root}", "no train/ folder"],
        empty_root,
        id="empty-pneumonia-folder",
    ),
    pytest.param(
        ["--dataset", "pneumonia", "--data-root", "{root}"],
        ["{root}/train", "no class folders"],
        no_class_folders,
        id="pneumonia-without-classes",
    ),
    pytest.param(
        ["--dataset", "pneumonia", "--data-root", "{root}"],
        ["{root}/train", "1 class folder"],
        one_class_folder,
        id="pneumonia-one-class",
    ),
    pytest.param(
        ["--dataset", "pneumonia", "--data-root", "{root}"],
        ["{root}/train/VIRUS/broken.jpeg", "corrupt"],
        corrupt_image,
        id="corrupt-image",
    ),
    # values only the data or the accountant can reject
    pytest.param(
        ["--batch-size", "5000"], ["batch_size", "5000", "batch_size <="], None, id="batch-larger-than-client"
    ),
    pytest.param(["--epsilon", "1e-6"], ["epsilon", "1e-06", "not reachable"], None, id="unreachable-epsilon"),
]


def _case(tmp_path: Path, flags: list[str], expected: list[str], build: Builder | None):
    """The case's data folder built under TMP_PATH/data; its argv (--out and --cache-dir in an empty
    TMP_PATH/work), expected texts, and the working directory to run it in (empty, TMP_PATH/cwd)."""
    data = tmp_path / "data"
    data.mkdir(parents=True)
    root = build(data) if build is not None else ""
    flags = [f.replace("{root}", root) for f in flags]
    expected = [e.replace("{root}", root) for e in expected]
    work, cwd = tmp_path / "work", tmp_path / "cwd"
    work.mkdir()
    cwd.mkdir()
    argv = ["run", *FAST, *flags, "--out", str(work / "out"), "--cache-dir", str(work / "cache")]
    return argv, expected, work, cwd


def _one_error_line(result: Outcome, expected: list[str]) -> str:
    assert result.code == 2, (result.code, result.err[-2000:])
    assert "Traceback" not in result.out + result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err[-2000:]
    line = lines[0]
    assert line.startswith("error: ") and line[len("error: ") :].strip()
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    return line


@pytest.mark.timeout(180)
@pytest.mark.parametrize("flags, expected, build", CASES)
def test_bad_input_is_one_error_line(
    tmp_path: Path, monkeypatch, capfd, flags: list[str], expected: list[str], build: Builder | None
):
    argv, expected, work, cwd = _case(tmp_path, flags, expected, build)
    _one_error_line(in_process(argv, monkeypatch, capfd, cwd=cwd), expected)
    # nothing written: no output, no half-written temporary sibling, no twin cache
    assert not (work / "out").exists()
    assert sorted(p.name for p in work.iterdir()) == []
    assert sorted(p.name for p in cwd.iterdir()) == []


@pytest.mark.timeout(60)
def test_out_is_a_file(tmp_path: Path, monkeypatch, capfd):
    """--out naming an existing file is refused and the file is left alone."""
    out = tmp_path / "out"
    out.write_text("keep me")
    result = in_process(["run", *FAST, "--out", str(out)], monkeypatch, capfd, cwd=tmp_path)
    assert result.code == 2
    assert result.err.splitlines() == [f"error: --out={str(out)!r} exists and is not a folder"]
    assert out.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _progress_argv(out: Path) -> list[str]:
    flags = [f for f in FAST if f != "--quiet"]
    return ["run", *flags, "--batch-size", "5000", "--out", str(out), "--cache-dir", "none"]


def _progress_then_one_error_line(result: Outcome) -> None:
    assert result.code == 2
    assert "Traceback" not in result.out + result.err
    lines = result.err.splitlines()
    assert lines[0].startswith("data: digits")
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert "batch_size=5000" in lines[-1]


@pytest.mark.timeout(180)
def test_progress_then_one_error_line(tmp_path: Path, monkeypatch, capfd):
    """Without --quiet, a value rejected after data loading follows the progress so far."""
    result = in_process(_progress_argv(tmp_path / "out"), monkeypatch, capfd, cwd=tmp_path)
    _progress_then_one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def _cifar_payload(tmp_path: Path) -> tuple[Path, Path]:
    """A CIFAR-10 folder whose test_batch pickle would write TMP_PATH/pwned; (data root, marker)."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    root = _cifar10(tmp_path / "cifar")
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({"data": Exploit(), "labels": [0]}, fh)
    return root, marker


def _payload_argv(root: Path, download: list[str], out: Path) -> list[str]:
    return [
        "run",
        *FAST,
        "--dataset",
        "cifar10",
        "--data-root",
        str(root),
        *download,
        "--out",
        str(out),
        "--cache-dir",
        "none",
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("download", [[], ["--download"]], ids=["no-download", "download"])
def test_cifar_payload_never_runs_through_the_cli(tmp_path: Path, monkeypatch, capfd, download: list[str]):
    """A batch file whose pickle would write a marker: refused with one line, the marker never appears."""
    root, marker = _cifar_payload(tmp_path)
    out = tmp_path / "out"
    result = in_process(_payload_argv(root, download, out), monkeypatch, capfd, cwd=tmp_path)
    assert result.code == 2, result.err[-2000:]
    assert result.err.splitlines() == [result.err.strip()] and "system is not allowed" in result.err
    assert not marker.exists() and not out.exists()


@pytest.mark.timeout(240)
def test_real_processes_agree(tmp_path: Path, monkeypatch, capfd):
    """Three of the cases above as real `psreval` processes (the console script, started together): an
    argparse refusal, a value rejected after data loading with its progress lines, and a CIFAR-10 pickle
    payload with --download. Each ends as in this process: exit status 2, the same stderr (the one error
    line; the same progress lines before it), no traceback, nothing written, no marker."""
    unknown = next(c for c in CASES if c.id == "unknown-flag")
    argv, expected, work, cwd = _case(tmp_path / "unknown", *unknown.values)
    (tmp_path / "progress").mkdir()
    progress = _progress_argv(tmp_path / "progress" / "out")
    root, marker = _cifar_payload(tmp_path / "payload")
    payload = _payload_argv(root, ["--download"], tmp_path / "payload" / "out")
    runs = [(argv, cwd), (progress, tmp_path / "progress"), (payload, tmp_path / "payload")]

    here = [in_process(a, monkeypatch, capfd, cwd=c) for a, c in runs]
    procs = [start(a, c) for a, c in runs]
    there = [finish(p) for p in procs]

    for (a, _), mine, theirs in zip(runs, here, there):
        assert theirs.code == mine.code == 2, (a, theirs.err[-2000:])
        assert "Traceback" not in theirs.out + theirs.err
        assert theirs.err == mine.err, a
        assert theirs.out == mine.out, a
    _one_error_line(there[0], expected)
    _progress_then_one_error_line(there[1])
    assert "system is not allowed" in there[2].err and len(there[2].err.splitlines()) == 1
    assert sorted(p.name for p in work.iterdir()) == [] and sorted(p.name for p in cwd.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "progress").iterdir()) == []
    assert not marker.exists() and not (tmp_path / "payload" / "out").exists()

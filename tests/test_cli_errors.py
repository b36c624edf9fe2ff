"""Bad input through the real CLI, as a user would meet it.

Every case runs ``python -m psreval_tune run ...`` in a subprocess and must
end with exit status 2, exactly one ``error: ...`` line on stderr naming the
bad value, no traceback, and nothing written: neither the --out folder nor
the temporary sibling it is assembled in, nor the twin cache.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # `python -m psreval_tune run` subprocesses

REPO = Path(__file__).resolve().parents[1]
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


@pytest.mark.timeout(180)
@pytest.mark.parametrize("flags, expected, build", CASES)
def test_bad_input_is_one_error_line(tmp_path: Path, flags: list[str], expected: list[str], build: Builder | None):
    data = tmp_path / "data"
    data.mkdir()
    root = build(data) if build is not None else ""
    flags = [f.replace("{root}", root) for f in flags]
    expected = [e.replace("{root}", root) for e in expected]
    work = tmp_path / "work"
    work.mkdir()
    out, cache = work / "out", work / "cache"

    proc = subprocess.run(
        [sys.executable, "-m", "psreval_tune", "run", *FAST, *flags, "--out", str(out), "--cache-dir", str(cache)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    line = lines[0]
    assert line.startswith("error: ") and line[len("error: ") :].strip()
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    # nothing written: no output, no half-written temporary sibling, no twin cache
    assert not out.exists()
    assert sorted(p.name for p in work.iterdir()) == []


@pytest.mark.timeout(60)
def test_out_is_a_file(tmp_path: Path):
    """--out naming an existing file is refused and the file is left alone."""
    out = tmp_path / "out"
    out.write_text("keep me")
    proc = subprocess.run(
        [sys.executable, "-m", "psreval_tune", "run", *FAST, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: --out={str(out)!r} exists and is not a folder"]
    assert out.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.timeout(180)
def test_progress_then_one_error_line(tmp_path: Path):
    """Without --quiet, a value rejected after data loading follows the progress so far."""
    out = tmp_path / "out"
    flags = [f for f in FAST if f != "--quiet"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "psreval_tune",
            "run",
            *flags,
            "--batch-size",
            "5000",
            "--out",
            str(out),
            "--cache-dir",
            "none",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("data: digits")
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert "batch_size=5000" in lines[-1]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("download", [[], ["--download"]], ids=["no-download", "download"])
def test_cifar_payload_never_runs_through_the_cli(tmp_path: Path, download: list[str]):
    """A batch file whose pickle would write a marker: refused with one line, the marker never appears."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    root = _cifar10(tmp_path / "cifar")
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({"data": Exploit(), "labels": [0]}, fh)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "psreval_tune",
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
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "system is not allowed" in proc.stderr
    assert not marker.exists() and not out.exists()

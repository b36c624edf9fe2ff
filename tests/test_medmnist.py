"""dataset=medmnist: a MedMNIST .npz the tests write themselves (no download).

The files have MedMNIST's layout (train/val/test _images uint8 (N, H, W) or
(N, H, W, 3), _labels (N, 1)) and names (pneumoniamnist.npz at 28x28,
pneumoniamnist_64.npz above), so the loader's real code path is under test.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_harness import in_process
from conftest import FAST_TRAINING

from psreval_tune.config import ConfigError, CycleConfig
from psreval_tune.data import DataError, load_data, medmnist_filename

REPO = Path(__file__).resolve().parents[1]
SIZES = {"train": 24, "val": 6, "test": 8}


def arrays(size: int = 28, channels: int = 1, classes: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = (size, size) if channels == 1 else (size, size, channels)
    out = {}
    for part, n in SIZES.items():
        out[f"{part}_images"] = rng.integers(0, 256, (n, *pixels), dtype=np.uint8)
        out[f"{part}_labels"] = (np.arange(n) % classes).astype(np.uint8).reshape(n, 1)
    return out


def write(root: Path, subset: str = "pneumoniamnist", size: int = 28, **content) -> Path:
    """ROOT/<MedMNIST file name>, compressed like the published files; content replaces arrays."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / medmnist_filename(subset, size)
    np.savez_compressed(path, **content)
    return path


def cfg(root: Path, **kw) -> CycleConfig:
    return CycleConfig(dataset="medmnist", data_root=str(root), **kw)


def test_file_names_follow_medmnist():
    assert medmnist_filename("pneumoniamnist", 28) == "pneumoniamnist.npz"
    assert medmnist_filename("pneumoniamnist", 224) == "pneumoniamnist_224.npz"


def test_grayscale_splits_pixels_and_labels(tmp_path):
    data = arrays()
    data["test_images"][2] = 0
    data["test_images"][2, 3, 5] = 201  # row 3, column 5: pins the layout
    write(tmp_path, **data)
    bundle = load_data(cfg(tmp_path))
    assert bundle.num_classes == 2 and bundle.in_channels == 1
    # the official splits, whole: val is the file's val split, not carved out of train
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (24, 6, 8)
    for part in ("train", "val", "test"):
        split = getattr(bundle, part)
        assert split.x.shape[1:] == (1, 28, 28)
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert torch.equal(split.x, torch.from_numpy(data[f"{part}_images"]).unsqueeze(1).float() / 255)
        assert split.y.tolist() == data[f"{part}_labels"].reshape(-1).tolist()
    assert bundle.test.x[2, 0, 3, 5] == pytest.approx(201 / 255) and bundle.test.x[2].sum() == pytest.approx(201 / 255)


def test_rgb_subset_channels_and_classes(tmp_path):
    data = arrays(channels=3, classes=8)
    data["val_images"][1] = (10, 120, 250)  # R, G, B in the last axis
    write(tmp_path, "bloodmnist", **data)
    bundle = load_data(cfg(tmp_path, medmnist_subset="bloodmnist"))
    assert bundle.num_classes == 8 and bundle.in_channels == 3
    assert bundle.train.x.shape[1:] == (3, 28, 28)
    assert set(bundle.train.y.tolist()) == set(range(8))
    for channel, value in enumerate((10, 120, 250)):
        assert torch.all(bundle.val.x[1, channel] == value / 255)
    assert torch.equal(bundle.test.x, torch.from_numpy(data["test_images"]).permute(0, 3, 1, 2).float() / 255)


def test_image_size_picks_the_file(tmp_path):
    write(tmp_path, **arrays(28))
    write(tmp_path, size=64, **arrays(64))
    assert load_data(cfg(tmp_path)).train.x.shape[1:] == (1, 28, 28)
    assert load_data(cfg(tmp_path, image_size=64)).train.x.shape[1:] == (1, 64, 64)
    with pytest.raises(DataError, match=r"has no pneumoniamnist_128\.npz .* at image_size=128"):
        load_data(cfg(tmp_path, image_size=128))


def test_subsampling_leaves_the_official_val_split_whole(tmp_path):
    write(tmp_path, **arrays())
    bundle = load_data(cfg(tmp_path, train_samples=10, test_samples=5, val_fraction=0.3))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (10, 6, 5)


def _object_array(marker: Path) -> np.ndarray:
    class Exploit:  # unpickling it runs `touch MARKER`
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    return np.array([Exploit()], dtype=object)


def _without(key: str) -> dict[str, np.ndarray]:
    data = arrays()
    del data[key]
    return data


def _with(**changes) -> dict[str, np.ndarray]:
    return {**arrays(), **changes}


@pytest.mark.parametrize(
    "content, text",
    [
        pytest.param(
            _without("val_labels"), "has no 'val_labels' array; expected the arrays train_images, ", id="missing-key"
        ),
        pytest.param(
            _with(train_images=np.zeros((24, 28, 28), np.float32)),
            "train_images is float32 of shape (24, 28, 28); expected uint8 of shape (N, 28, 28)",
            id="float-pixels",
        ),
        pytest.param(
            _with(test_images=np.zeros((8, 28, 28, 3), np.uint8)),
            "test_images is uint8 of shape (8, 28, 28, 3); expected uint8 of shape (N, 28, 28)",
            id="rgb-for-gray",
        ),
        pytest.param(
            _with(val_images=np.zeros((0, 28, 28), np.uint8), val_labels=np.zeros((0, 1), np.uint8)),
            "expected uint8 of shape (N, 28, 28) with N >= 1",
            id="empty-split",
        ),
        pytest.param(
            _with(train_labels=np.zeros((24, 1), np.float64)),
            "train_labels is float64 of shape (24, 1); expected integers of shape (24, 1)",
            id="float-labels",
        ),
        pytest.param(
            _with(train_labels=np.zeros((23, 1), np.uint8)),
            "train_labels is uint8 of shape (23, 1); expected integers of shape (24, 1)",
            id="label-count",
        ),
        pytest.param(
            _with(test_labels=np.full((8, 1), 2, np.uint8)),
            "test_labels hold values in 2..2; expected 0..1",
            id="label-out-of-range",
        ),
        pytest.param(
            _with(val_labels=np.full((6, 1), -1, np.int64)),
            "val_labels hold values in -1..-1; expected 0..1",
            id="negative-label",
        ),
    ],
)
def test_bad_content_is_one_line_naming_path_and_expectation(tmp_path, content, text):
    path = write(tmp_path, **content)
    with pytest.raises(DataError) as err:
        load_data(cfg(tmp_path))
    message = str(err.value)
    assert str(path) in message and text in message
    assert "\n" not in message


@pytest.mark.parametrize("key", ["train_images", "test_labels"])
def test_pickle_carrying_npz_is_refused_and_never_run(tmp_path, key):
    marker = tmp_path / "pwned"
    path = write(tmp_path / "data", **_with(**{key: _object_array(marker)}))
    with pytest.raises(DataError, match=f"{key} is object of shape \\(1,\\)") as err:
        load_data(cfg(tmp_path / "data"))
    assert "\n" not in str(err.value)
    assert not marker.exists()
    # the file is live: numpy's unsafe path would have run the payload
    with np.load(path, allow_pickle=True) as npz:
        npz[key]
    assert marker.exists()


def test_missing_file_names_path_and_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"has no pneumoniamnist\.npz .*download it once from https://zenodo"):
        load_data(cfg(tmp_path))
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        load_data(cfg(tmp_path / "nowhere"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bit-flip-in-pixels"])
def test_corrupt_archive_is_a_data_error(tmp_path, damage):
    path = write(tmp_path, **arrays())
    blob = bytearray(path.read_bytes())
    if damage == "garbage":
        blob = bytearray(b"not a zip file" * 10)
    elif damage == "truncated":
        blob = blob[: len(blob) // 2]
    else:  # inside train_images' data, past its header: only reading the pixels finds it (CRC)
        blob[len(blob) // 4] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=f"corrupt MedMNIST file {path}"):
        load_data(cfg(tmp_path))


def test_declared_huge_array_is_refused_before_reading(tmp_path, monkeypatch):
    """A small archive whose headers declare 10^9 images: refused from the headers, nothing read."""
    huge = 10**9
    declared = {"train_images": ("|u1", (huge, 28, 28)), "train_labels": ("|u1", (huge, 1))}
    path = tmp_path / "pneumoniamnist.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays().items():
            with zf.open(f"{key}.npy", "w") as fh:
                if key in declared:  # the header alone, no data
                    descr, shape = declared[key]
                    header = {"descr": descr, "fortran_order": False, "shape": shape}
                    np.lib.format.write_array_header_1_0(fh, header)
                else:
                    np.lib.format.write_array(fh, value)
    assert path.stat().st_size < 20_000  # declares 784 GB of pixels
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load ran before the memory check"))
    total = huge + SIZES["val"] + SIZES["test"]
    with pytest.raises(DataError, match=rf"pneumoniamnist\.npz \({total} images\) at image_size=28 needs .* GB"):
        load_data(cfg(tmp_path))


@pytest.mark.parametrize(
    "kw, text",
    [
        pytest.param({"image_size": 32}, "image_size=32 is not allowed; expected one of 28, 64, 128, 224", id="size"),
        pytest.param(
            {"download": True}, "download=True is not allowed; expected false for dataset=medmnist", id="download"
        ),
        pytest.param(
            {"medmnist_subset": "chestmnist"},
            "medmnist_subset='chestmnist' is not allowed; expected one of pneumoniamnist, ",
            id="subset",
        ),
        pytest.param({"data_root": None}, "data_root=None is not allowed", id="no-root"),
    ],
)
def test_config_errors(tmp_path, kw, text):
    with pytest.raises(ConfigError, match="^" + re.escape(text)):
        CycleConfig(**{"dataset": "medmnist", "data_root": str(tmp_path), **kw})


def test_subset_only_keys_medmnist_trainings(tmp_path):
    digits = CycleConfig()
    assert digits.training_key() == digits.replace(medmnist_subset="bloodmnist").training_key()
    med = cfg(tmp_path)
    assert med.training_key() != med.replace(medmnist_subset="bloodmnist").training_key()


@pytest.mark.slow
def test_short_cycle_on_tiny_medmnist(tmp_path):
    from psreval_tune.cycle import run_cycle

    write(tmp_path, "dermamnist", **arrays(channels=3, classes=7))
    config = cfg(
        tmp_path,
        medmnist_subset="dermamnist",
        rounds=2,
        eval_samples=8,
        eval_attacks=("FGSM",),
        attack_repeats=1,
        device="cpu",
        **{**FAST_TRAINING, "batch_size": 8},
    )
    result = run_cycle(config)
    m = result.metrics
    assert m["n_test"] == SIZES["test"] and m["n_eval"] == 8
    assert 0 <= m["acc_val_float"] <= 1 and 0 <= m["acc_clean_int8"] <= 1
    assert len(result.history) == 2


@pytest.mark.slow
def test_cli_refuses_a_pickle_carrying_npz_in_one_line(tmp_path, monkeypatch, capfd):
    """`psreval run` in this process (tests/cli_harness.py; test_cli_errors.py checks that a real `psreval`
    process ends the same way on a CIFAR-10 pickle payload)."""
    marker = tmp_path / "pwned"
    write(tmp_path / "data", **_with(val_images=_object_array(marker)))
    out = tmp_path / "out"
    argv = ["run", "--dataset", "medmnist", "--data-root", str(tmp_path / "data"), "--out", str(out)]
    result = in_process([*argv, "--cache-dir", "none", "--quiet"], monkeypatch, capfd, cwd=REPO)
    assert result.code == 2, result.err
    assert "Traceback" not in result.out + result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: MedMNIST file ") and "val_images is object" in lines[0]
    assert not marker.exists() and not out.exists()

"""IDX datasets (fashion_mnist, mnist, kmnist): tiny IDX files the tests write themselves, every hostile
header refused in one line before anything is allocated, and (slow, skipped without Debian's
dataset-fashion-mnist package) the real Fashion-MNIST files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAINING

from psreval_tune.config import ConfigError, CycleConfig
from psreval_tune.data import DataError, load_data
from psreval_tune.datasets import DATASETS
from psreval_tune.datasets import _idx as idx
from psreval_tune.datasets.fashion_mnist import DEBIAN_ROOT

COUNTS = {"train": 40, "t10k": 12}


def idx_bytes(array: np.ndarray, code: int = 0x08, dims: tuple[int, ...] | None = None) -> bytes:
    """An IDX file: magic (0, 0, dtype code, ndim), big-endian uint32 dims, the items."""
    dims = array.shape if dims is None else dims
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()


def write_set(root: Path, gz: bool = False, seed: int = 0, classes: int = 10, **replace: bytes) -> dict[str, Path]:
    """The four standard files in root; ``replace`` maps a part (train_images, ...) to raw bytes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, base in idx.PARTS.items():
        n = COUNTS[base.split("-")[0]]
        if part.endswith("images"):
            content = idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        else:
            content = idx_bytes((np.arange(n) % classes).astype(np.uint8))
        content = replace.get(part, content)
        path = root / (base + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(content) if gz else content)
        paths[part] = path
    return paths


def cfg(root: Path, dataset: str = "mnist", **kw) -> CycleConfig:
    return CycleConfig(dataset=dataset, data_root=str(root), **kw)


# --- what a valid set reads as ---------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dataset", ["mnist", "kmnist", "fashion_mnist"])
def test_a_valid_set_reads_pixels_labels_and_fixed_constants(tmp_path, gz, dataset):
    paths = write_set(tmp_path, gz=gz)
    raw = paths["test_images"].read_bytes()
    pixels = np.frombuffer(gzip.decompress(raw) if gz else raw, dtype=np.uint8)[16:].reshape(12, 28, 28)
    bundle = load_data(cfg(tmp_path, dataset, val_fraction=0.25))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (30, 10, 12)  # val carved out of train
    assert bundle.num_classes == 10 and bundle.in_channels == 1
    assert bundle.test.x.shape == (12, 1, 28, 28) and bundle.test.x.dtype == torch.float32
    assert torch.equal(bundle.test.x[:, 0], torch.from_numpy(pixels.copy()).float() / 255)  # row-major layout
    assert bundle.test.y.tolist() == [i % 10 for i in range(12)] and bundle.test.y.dtype == torch.int64
    # the model's constants are the entry's fixed public ones, not statistics of this (random) train split
    assert (bundle.mean, bundle.std) == DATASETS.get(dataset).norm


def test_torchvision_layout_and_dotted_names_are_found(tmp_path):
    paths = write_set(tmp_path / "MNIST" / "raw")
    paths["train_images"].rename(paths["train_images"].with_name("train-images.idx3-ubyte"))
    assert len(load_data(cfg(tmp_path)).test) == 12


def test_every_idx_entry_declares_public_constants_and_refuses_download(tmp_path):
    for name in ("fashion_mnist", "mnist", "kmnist"):
        entry = DATASETS.get(name)
        (mean,), (std,) = entry.norm
        assert 0 < mean < 1 and 0 < std < 1 and entry.num_classes == 10 and entry.image_size == 28
        with pytest.raises(ConfigError, match=rf"^download=True is not allowed; expected false for dataset={name}"):
            cfg(tmp_path, name, download=True)
    with pytest.raises(ConfigError, match="^data_root=None is not allowed"):
        CycleConfig(dataset="mnist")
    CycleConfig(dataset="fashion_mnist")  # the Debian package's folder is its default


# --- hostile or corrupt files: one line naming the file, before any allocation -------------

IMG = np.zeros((40, 28, 28), np.uint8)
LAB = np.zeros(40, np.uint8)


def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


HOSTILE = {
    "bad magic": ("train_images", b"\x08\x03\0\0" + IMG.tobytes(), r"bad magic number 0x08030000"),
    "not IDX at all": ("train_labels", b"GIF89a" + bytes(100), r"bad magic number 0x47494638"),
    "empty": ("train_images", b"", r"0 bytes, shorter than an IDX header"),
    "short header": ("train_images", bytes([0, 0, 8, 3, 0, 0]), r"the header ends after 6 bytes"),
    "float items": ("train_images", idx_bytes(IMG.astype(">f4"), code=0x0D), r"IDX dtype 0x0d \(float32\)"),
    "unknown dtype": ("train_images", _header(0x42, (40, 28, 28)), r"unknown IDX dtype code 0x42"),
    "labels as images": ("train_labels", idx_bytes(IMG), r"3 dimensions .*expected 1"),
    "wrong image side": ("train_images", idx_bytes(np.zeros((40, 32, 32), np.uint8)), r"items of 32x32; expected 28"),
    "no images": ("train_images", _header(8, (0, 28, 28)), r"declares 0 items"),
    "counts larger than the file": ("train_images", _header(8, (41, 28, 28)) + IMG.tobytes(), r"truncated"),
    "10^9 images": ("train_images", _header(8, (10**9, 28, 28)) + IMG.tobytes(), r"declares 1000000000 items"),
    "2^32-1 labels": ("train_labels", _header(8, (2**32 - 1,)) + LAB.tobytes(), r"declares 4294967295 items"),
    "trailing bytes": ("train_labels", idx_bytes(LAB) + b"\0" * 7, r"7 bytes after the 40 bytes"),  # gz: below
    "label/image count mismatch": ("train_labels", idx_bytes(LAB[:39]), r"declares 40 images, .* 39 labels"),
    "label out of range": ("test_labels", idx_bytes(np.full(12, 10, np.uint8)), r"labels in 10\.\.10; expected 0\.\.9"),
}


GZIP_MESSAGES = {
    "counts larger than the file": r"declares 41 images, .* 40 labels",  # the stream's end: below
    "trailing bytes": r"inflates to more than the 40 bytes its header declares",
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_files_are_one_line_naming_the_file(tmp_path, monkeypatch, case, gz):
    part, content, message = HOSTILE[case]
    if gz and case in GZIP_MESSAGES:  # a gzip's size says nothing exact: the stream ends short or runs on
        message = GZIP_MESSAGES[case]
    paths = write_set(tmp_path, gz=gz, **{part: content})
    allocated = []
    real = idx._allocate
    monkeypatch.setattr(idx, "_allocate", lambda n: allocated.append(n) or real(n))
    with pytest.raises(DataError) as info:
        load_data(cfg(tmp_path))
    text = str(info.value)
    assert "\n" not in text and (str(paths[part]) in text or "disagree" in text), text
    assert __import__("re").search(message, text), text
    assert sum(allocated) < 200_000, allocated  # the real files' items at most, never what a header claims


def test_a_gzip_bomb_is_refused_before_and_while_inflating(tmp_path):
    # 1) a small gzip whose header declares far more than deflate can hold: refused unread
    paths = write_set(tmp_path / "a", gz=True)
    paths["train_images"].write_bytes(gzip.compress(_header(8, (10**6, 28, 28)) + bytes(200_000)))
    with pytest.raises(DataError, match=r"more than a gzip file of \d+ bytes can hold"):
        load_data(cfg(tmp_path / "a"))
    # 2) a stream inflating to more than its (plausible) header declares: decompression stops one byte past it
    paths = write_set(tmp_path / "b", gz=True)
    paths["train_images"].write_bytes(gzip.compress(idx_bytes(IMG) + bytes(5_000_000)))
    assert paths["train_images"].stat().st_size < 10_000
    with pytest.raises(DataError, match=r"inflates to more than the 31360 bytes its header declares"):
        load_data(cfg(tmp_path / "b"))


def test_broken_gzip_stream_is_one_line(tmp_path):
    paths = write_set(tmp_path, gz=True)
    blob = paths["test_images"].read_bytes()
    paths["test_images"].write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"^corrupt IDX file .*t10k-images-idx3-ubyte.gz: broken gzip stream"):
        load_data(cfg(tmp_path))
    paths["test_images"].write_bytes(gzip.compress(_header(8, (13, 28, 28)) + bytes(12 * 784)))
    paths["test_labels"].write_bytes(gzip.compress(_header(8, (13,)) + bytes(12)))  # both declare 13, hold 12
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: it declares 13 bytes of items, but holds 12 \("):
        load_data(cfg(tmp_path))
    paths["test_images"].write_bytes(b"\x1f\x8b" + bytes(40))
    with pytest.raises(DataError, match=r"not a readable gzip stream \(BadGzipFile\)"):
        load_data(cfg(tmp_path))


def test_missing_files_say_what_is_expected(tmp_path):
    with pytest.raises(DataError, match=r"^no mnist IDX files in .*expected train-images-idx3-ubyte\[\.gz\]"):
        load_data(cfg(tmp_path))
    paths = write_set(tmp_path)
    paths["test_labels"].unlink()
    with pytest.raises(DataError, match=r"holds only some mnist IDX files: missing t10k-labels-idx1-ubyte\[\.gz\]$"):
        load_data(cfg(tmp_path))
    with pytest.raises(DataError, match=r"^data_root='/nonexistent/x' does not exist"):
        load_data(cfg(Path("/nonexistent/x"), "fashion_mnist"))


def test_fashion_mnist_without_the_package_says_how_to_install(monkeypatch):
    import psreval_tune.datasets.fashion_mnist as fm

    monkeypatch.setattr(fm, "DEBIAN_ROOT", Path("/nonexistent/fashion-mnist"))
    with pytest.raises(DataError, match=r"^Fashion-MNIST is not installed in .*apt-get install dataset-fashion-mnist"):
        load_data(CycleConfig(dataset="fashion_mnist"))


def test_cli_refuses_a_missing_or_hostile_folder_in_one_line_exit_2(tmp_path, capsys):
    from psreval_tune.cli import main

    write_set(tmp_path / "hostile", train_images=_header(8, (10**9, 28, 28)))
    for folder in ("/nonexistent", str(tmp_path / "hostile")):
        out = tmp_path / "out"
        argv = ["run", "--dataset", "fashion_mnist", "--data-root", folder, "--rounds", "1", "--out", str(out)]
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and folder in lines[0], lines
        assert not out.exists()


# --- the real files (Debian's dataset-fashion-mnist) ---------------------------------------

REAL = pytest.mark.skipif(
    not (DEBIAN_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_ROOT}); `make install` as root installs it",
)


@pytest.mark.slow
@REAL
def test_real_fashion_mnist_files_and_a_short_cycle():
    """The package's four gzipped files: 60,000 + 10,000 images, balanced labels, the fixed constants
    within 0.005 of the public validation split's own statistics; then two short federated rounds on a
    subsample learn far above chance (10%) on validation images."""
    from psreval_tune.cycle import _fresh_model
    from psreval_tune.evaluate import accuracy
    from psreval_tune.federated import Federation

    full = load_data(CycleConfig(dataset="fashion_mnist"))
    assert (len(full.train) + len(full.val), len(full.test)) == (60000, 10000)
    assert full.test.y.bincount().tolist() == [1000] * 10
    assert abs(full.val.x.mean().item() - full.mean[0]) < 0.005 and abs(full.val.x.std().item() - full.std[0]) < 0.005
    del full
    # Pinned training (not the recipe, so a recipe change never moves this test): ~140 SGD steps per client
    training = {**FAST_TRAINING, "batch_size": 32, "lr": 0.05}
    small = CycleConfig(dataset="fashion_mnist", device="cpu", train_samples=5000, rounds=2, **training)
    data = load_data(small)
    model = Federation(small, _fresh_model(small, data), data, "cpu").train()
    assert accuracy(model, data.val.x, data.val.y) >= 0.5  # chance is 0.1

"""The real loaders, on tiny datasets the tests write themselves (no downloads).

CIFAR-10 is written in torchvision's on-disk python-pickle layout and the
pneumonia X-rays as an ImageFolder of JPEGs, so the code paths that read the
real datasets are the ones under test.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from psreval_tune.config import CycleConfig
from psreval_tune.data import DataError, load_data, partition

# --- tiny CIFAR-10 ----------------------------------------------------------------

CIFAR_TRAIN_SIZES = (7, 5, 6, 4, 8)  # data_batch_1..5: 30 images
CIFAR_TEST_SIZE = 9


def write_cifar10(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}.

    Each batch is a dict with "data" (uint8, N x 3072: the red plane, then
    green, then blue, each 32x32 row-major) and "labels". The real files are
    Python 2 pickles whose keys torchvision reads back, with
    encoding="latin1", as str: so str keys here give the same objects.
    """
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, CIFAR_TRAIN_SIZES + (CIFAR_TEST_SIZE,)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batches[name] = (data, labels)
    # Known images: constant per-channel colour (R=10, G=120, B=250) and one
    # marked pixel, to pin the channel order and the row-major layout.
    data, _ = batches["data_batch_3"]
    data[2, :1024], data[2, 1024:2048], data[2, 2048:] = 10, 120, 250
    data, _ = batches["test_batch"]
    data[4] = 0
    data[4, 2 * 1024 + 5 * 32 + 7] = 201  # blue, row 5, column 7
    for name, (data, labels) in batches.items():
        with open(base / name, "wb") as fh:
            pickle.dump({"batch_label": name, "data": data, "labels": labels, "filenames": []}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump(
            {
                "label_names": [
                    "airplane",
                    "automobile",
                    "bird",
                    "cat",
                    "deer",
                    "dog",
                    "frog",
                    "horse",
                    "ship",
                    "truck",
                ],
                "num_vis": 3072,
            },
            fh,
        )
    return batches


@pytest.fixture
def cifar_root(tmp_path):
    root = tmp_path / "cifar"
    return root, write_cifar10(root)


def _expected(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255.0


def test_cifar10_shapes_splits_and_range(cifar_root):
    root, _ = cifar_root
    bundle = load_data(CycleConfig(dataset="cifar10", data_root=str(root)))
    assert bundle.num_classes == 10
    assert bundle.in_channels == 3
    assert len(bundle.train) + len(bundle.val) == sum(CIFAR_TRAIN_SIZES)
    assert len(bundle.val) >= 1
    assert len(bundle.test) == CIFAR_TEST_SIZE
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.shape[1:] == (3, 32, 32)
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.min() >= 0 and split.x.max() <= 1


def test_cifar10_pixels_and_labels_round_trip(cifar_root):
    root, batches = cifar_root
    bundle = load_data(CycleConfig(dataset="cifar10", data_root=str(root)))

    # The test split keeps the file's order: every pixel and label round-trips.
    data, labels = batches["test_batch"]
    assert torch.equal(bundle.test.x, _expected(data))
    assert bundle.test.y.tolist() == labels
    marked = bundle.test.x[4]
    assert marked[2, 5, 7] == pytest.approx(201 / 255)
    assert marked.sum() == pytest.approx(201 / 255)  # nothing else lit: no transposition

    # train+val are shuffled: match each image back to the batch it came from.
    written = torch.cat([_expected(batches[f"data_batch_{i}"][0]) for i in range(1, 6)])
    written_y = [y for i in range(1, 6) for y in batches[f"data_batch_{i}"][1]]
    pool_x = torch.cat([bundle.train.x, bundle.val.x])
    pool_y = torch.cat([bundle.train.y, bundle.val.y])
    flat = written.flatten(1)
    matched = []
    for x, y in zip(pool_x, pool_y):
        hits = (flat == x.flatten()).all(dim=1).nonzero().flatten().tolist()
        assert len(hits) == 1
        assert written_y[hits[0]] == int(y)
        matched.append(hits[0])
    assert sorted(matched) == list(range(len(written)))

    # The constant-colour image: channel 0 is red, 1 green, 2 blue.
    colour = written[sum(CIFAR_TRAIN_SIZES[:2]) + 2]
    hits = [x for x in pool_x if torch.equal(x, colour)]
    assert len(hits) == 1
    for channel, value in enumerate((10, 120, 250)):
        assert torch.all(hits[0][channel] == torch.tensor(value, dtype=torch.float32) / 255)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not a pickle", id="garbage"),
        pytest.param(b"", id="empty-file"),
        pytest.param(b"\x95\xb9\xe6\xc0\x06tb\xa0\xe2", id="bogus-frame-header"),
        pytest.param(pickle.dumps([1, 2, 3]), id="not-a-dict"),
        pytest.param(pickle.dumps({"labels": [0]}), id="no-data-key"),
        pytest.param(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}), id="wrong-shape"),
    ],
)
def test_cifar10_corrupt_batch_is_a_data_error(cifar_root, content):
    root, _ = cifar_root
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(content)
    with pytest.raises(DataError, match="corrupt CIFAR-10"):
        load_data(CycleConfig(dataset="cifar10", data_root=str(root)))


def test_cifar10_missing_batch_file_is_a_data_error(cifar_root):
    root, _ = cifar_root
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="holds no CIFAR-10 data"):
        load_data(CycleConfig(dataset="cifar10", data_root=str(root)))


# --- tiny pneumonia ImageFolder ------------------------------------------------------

# Folder name -> (grey level, mode). Solid images, so a resize keeps the value.
PNEUMONIA = {"NORMAL": (200, "L"), "BACTERIA": (40, "L"), "VIRUS": ((255, 0, 0), "RGB")}
RED_AS_GREY = 255 * 299 / 1000  # ITU-R 601-2 luma, PIL's convert("L")
SIZES = [(20, 30), (64, 48), (17, 17)]


def write_pneumonia(root: Path) -> None:
    for part, count in (("train", 3), ("test", 2)):
        for name, (colour, mode) in PNEUMONIA.items():
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new(mode, SIZES[i % len(SIZES)], colour).save(folder / f"img{i}.jpeg", quality=95)


def _grey(name: str) -> float:
    colour, mode = PNEUMONIA[name]
    return (RED_AS_GREY if mode == "RGB" else colour) / 255


def test_pneumonia_grayscale_resize_and_labels(tmp_path):
    root = tmp_path / "xray"
    write_pneumonia(root)
    bundle = load_data(CycleConfig(dataset="pneumonia", data_root=str(root), image_size=16))
    assert bundle.num_classes == 3
    assert bundle.in_channels == 1
    assert len(bundle.train) + len(bundle.val) == 9
    assert len(bundle.test) == 6
    classes = sorted(PNEUMONIA)  # ImageFolder: labels are the sorted folder names
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.shape[1:] == (1, 16, 16)
        assert split.x.min() >= 0 and split.x.max() <= 1
        for x, y in zip(split.x, split.y):
            # each image is solid, so its mean says which folder it came from
            assert float(x.mean()) == pytest.approx(_grey(classes[int(y)]), abs=3 / 255)
            assert float(x.max() - x.min()) <= 3 / 255
    # the test split keeps ImageFolder's order: class by class
    assert bundle.test.y.tolist() == [0, 0, 1, 1, 2, 2]


def test_pneumonia_default_size(tmp_path):
    root = tmp_path / "xray"
    write_pneumonia(root)
    bundle = load_data(CycleConfig(dataset="pneumonia", data_root=str(root)))
    assert bundle.test.x.shape == (6, 1, 64, 64)


def test_pneumonia_corrupt_image_is_a_data_error(tmp_path):
    root = tmp_path / "xray"
    write_pneumonia(root)
    bad = root / "train" / "VIRUS" / "broken.jpeg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg" * 20)
    with pytest.raises(DataError, match="corrupt image") as err:
        load_data(CycleConfig(dataset="pneumonia", data_root=str(root)))
    assert str(bad) in str(err.value)


def test_pneumonia_truncated_jpeg_is_a_data_error(tmp_path):
    root = tmp_path / "xray"
    write_pneumonia(root)
    good = root / "test" / "NORMAL" / "img0.jpeg"
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="corrupt image"):
        load_data(CycleConfig(dataset="pneumonia", data_root=str(root)))


# --- digits and synthetic ---------------------------------------------------------------


def test_digits_splits():
    cfg = CycleConfig(dataset="digits")
    bundle = load_data(cfg)
    n_test = 1797 // 5
    n_pool = 1797 - n_test
    assert len(bundle.test) == n_test
    assert len(bundle.val) == round(cfg.val_fraction * n_pool)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 1797
    assert bundle.num_classes == 10 and bundle.in_channels == 1
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.shape[1:] == (1, 8, 8)
        assert split.x.min() >= 0 and split.x.max() <= 1
    assert bundle.train.x.max() == 1  # scaled by 16, not by 255
    assert set(bundle.train.y.tolist()) == set(range(10))
    # no example is in two splits
    rows = {
        tuple(x.flatten().tolist()) + (int(y),)
        for s in (bundle.train, bundle.val, bundle.test)
        for x, y in zip(s.x, s.y)
    }
    assert len(rows) >= 1797 - 5  # digits holds a handful of exact duplicates


def test_subsampling_train_and_test():
    bundle = load_data(CycleConfig(dataset="digits", train_samples=300, test_samples=50))
    assert len(bundle.train) + len(bundle.val) == 300
    assert len(bundle.test) == 50


def test_synthetic_shapes():
    bundle = load_data(CycleConfig(dataset="synthetic", image_size=12, train_samples=200, test_samples=40))
    assert bundle.train.x.shape[1:] == (3, 12, 12)
    assert len(bundle.train) + len(bundle.val) == 200 and len(bundle.test) == 40
    assert bundle.num_classes == 10
    assert bundle.train.x.min() >= 0 and bundle.train.x.max() <= 1


def test_synthetic_is_learnable():
    """Nearest class mean, fitted on train, nearly solves the test split."""
    bundle = load_data(CycleConfig(dataset="synthetic", train_samples=500, test_samples=200))
    flat = bundle.train.x.flatten(1)
    means = torch.stack([flat[bundle.train.y == c].mean(0) for c in range(10)])
    pred = torch.cdist(bundle.test.x.flatten(1), means).argmin(1)
    assert (pred == bundle.test.y).float().mean() > 0.9


# --- determinism ---------------------------------------------------------------------------


def _same(a, b) -> bool:
    return all(
        torch.equal(getattr(a, s).x, getattr(b, s).x) and torch.equal(getattr(a, s).y, getattr(b, s).y)
        for s in ("train", "val", "test")
    )


@pytest.mark.parametrize("dataset", ["digits", "synthetic"])
def test_same_seed_same_tensors(dataset):
    cfg = CycleConfig(dataset=dataset, train_samples=400, seed=3)
    a, b = load_data(cfg), load_data(cfg)
    assert _same(a, b)
    assert a.mean == b.mean and a.std == b.std
    assert not _same(a, load_data(cfg.replace(seed=4)))


def test_same_seed_same_tensors_cifar10(cifar_root):
    root, _ = cifar_root
    cfg = CycleConfig(dataset="cifar10", data_root=str(root), seed=1)
    assert _same(load_data(cfg), load_data(cfg))
    # the seed reshuffles the train/val split (the test split is the file's)
    other = load_data(cfg.replace(seed=2))
    assert not torch.equal(load_data(cfg).train.x, other.train.x)


# --- partition -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    return load_data(CycleConfig(dataset="digits")).train.y


def _covers_once(parts: list[torch.Tensor], n: int) -> bool:
    return torch.equal(torch.cat(parts).sort().values, torch.arange(n))


def test_iid_partition_covers_once_and_balanced(labels):
    cfg = CycleConfig(num_clients=4, batch_size=16)
    parts = partition(cfg, labels)
    assert len(parts) == 4
    assert _covers_once(parts, len(labels))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    # IID: every client sees roughly the global label mix
    for p in parts:
        share = torch.bincount(labels[p], minlength=10).float() / len(p)
        assert share.max() < 0.2


def test_dirichlet_partition_is_skewed_and_covers_once(labels):
    cfg = CycleConfig(num_clients=4, partition="dirichlet", dirichlet_alpha=0.1, batch_size=1)
    parts = partition(cfg, labels)
    assert _covers_once(parts, len(labels))
    majority = [torch.bincount(labels[p], minlength=10).max().item() / len(p) for p in parts]
    assert max(majority) > 0.5, majority
    # a large alpha is close to IID
    even = partition(cfg.replace(dirichlet_alpha=1000.0), labels)
    assert _covers_once(even, len(labels))
    assert max(torch.bincount(labels[p], minlength=10).max().item() / len(p) for p in even) < 0.2


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
@pytest.mark.parametrize("adversary", [0, 2])
def test_adversary_holds_adv_fraction(labels, scheme, adversary):
    cfg = CycleConfig(
        num_clients=3,
        threat="train_time_attack",
        adv_fraction=0.3,
        adversary_client=adversary,
        partition=scheme,
        dirichlet_alpha=1.0,
        batch_size=1,
    )
    parts = partition(cfg, labels)
    assert len(parts[adversary]) == round(0.3 * len(labels))
    assert _covers_once(parts, len(labels))


def test_partition_is_seeded(labels):
    cfg = CycleConfig(num_clients=3, partition="dirichlet", batch_size=1)
    a, b = partition(cfg, labels), partition(cfg, labels)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = partition(cfg.replace(seed=1), labels)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_batch_larger_than_client_is_a_data_error(labels):
    with pytest.raises(DataError, match=r"batch_size=5000 .* allowed: batch_size <= \d+"):
        partition(CycleConfig(batch_size=5000), labels)


class _Exploit:
    """Unpickling this runs ``touch MARKER``: the payload a hostile CIFAR-10 mirror could ship."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _plant_payload(root: Path, marker: Path, name: str = "data_batch_1") -> None:
    with open(root / "cifar-10-batches-py" / name, "wb") as fh:
        pickle.dump({"data": _Exploit(marker), "labels": [0]}, fh)


@pytest.mark.parametrize("download", [False, True], ids=["no-download", "download-files-present"])
@pytest.mark.parametrize("name", ["data_batch_1", "test_batch", "batches.meta"])
def test_cifar_batch_that_runs_code_is_refused(tmp_path, download, name):
    """A pickle can execute code when loaded; the loader must refuse it, not run it, whatever the
    flags (with --download and the files present, torchvision downloads nothing)."""
    marker = tmp_path / "pwned"
    root = tmp_path / "cifar"
    write_cifar10(root)
    _plant_payload(root, marker, name)
    with pytest.raises(DataError, match="posix.system is not allowed|os.system is not allowed"):
        load_data(CycleConfig(dataset="cifar10", data_root=str(root), download=download))
    assert not marker.exists()


def test_cifar_payload_arriving_by_download_is_refused(tmp_path, monkeypatch):
    """--download on an empty folder: the (here faked, no internet) download writes a batch file that
    carries a payload. The files are read only after the download, and only by the restricted
    unpickler, so the payload never runs."""
    from psreval_tune._torchvision import import_torchvision

    marker = tmp_path / "pwned"
    root = tmp_path / "cifar"
    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kw):
        calls.append((url, download_root, filename, md5))
        write_cifar10(Path(download_root))
        _plant_payload(Path(download_root), marker, "data_batch_3")

    utils = import_torchvision().datasets.utils
    monkeypatch.setattr(utils, "download_and_extract_archive", fake_download)
    with pytest.raises(DataError, match="posix.system is not allowed|os.system is not allowed"):
        load_data(CycleConfig(dataset="cifar10", data_root=str(root), download=True))
    assert len(calls) == 1 and calls[0][2] == "cifar-10-python.tar.gz" and calls[0][3]  # md5-checked archive
    assert not marker.exists()


def test_cifar_download_failure_is_one_line(tmp_path, monkeypatch):
    from psreval_tune._torchvision import import_torchvision

    def no_network(*a, **kw):
        raise OSError("[Errno -3] Temporary failure in name resolution\nmore")

    monkeypatch.setattr(import_torchvision().datasets.utils, "download_and_extract_archive", no_network)
    with pytest.raises(DataError, match=r"--download could not fetch CIFAR-10 .* name resolution$"):
        load_data(CycleConfig(dataset="cifar10", data_root=str(tmp_path / "new"), download=True))


def test_cifar_download_skipped_when_files_present(cifar_root, monkeypatch):
    from psreval_tune._torchvision import import_torchvision

    def must_not_run(*a, **kw):
        raise AssertionError("downloaded although every file is present")

    monkeypatch.setattr(import_torchvision().datasets.utils, "download_and_extract_archive", must_not_run)
    root, _ = cifar_root
    bundle = load_data(CycleConfig(dataset="cifar10", data_root=str(root), download=True))
    assert len(bundle.test) == CIFAR_TEST_SIZE


@pytest.mark.parametrize(
    "content, text",
    [
        pytest.param(
            {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 12]}, "label in 0..9", id="label-out-of-range"
        ),
        pytest.param({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "1 labels for 2 images", id="label-count"),
        pytest.param({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "uint8", id="float-pixels"),
    ],
)
def test_cifar10_inconsistent_batch_is_a_data_error(cifar_root, content, text):
    root, _ = cifar_root
    with open(root / "cifar-10-batches-py" / "data_batch_2", "wb") as fh:
        pickle.dump(content, fh)
    with pytest.raises(DataError, match="corrupt CIFAR-10") as info:
        load_data(CycleConfig(dataset="cifar10", data_root=str(root)))
    assert text in str(info.value)


def test_pneumonia_decompression_bomb_is_refused(tmp_path):
    """A small PNG that would decode to 60 Mpx is refused before it is decoded."""
    root = tmp_path / "xray"
    write_pneumonia(root)
    bomb = Image.new("1", (10_000, 6_000))  # 1-bit, compresses to a few kB
    bomb.save(root / "train" / "NORMAL" / "bomb.png", optimize=True)
    assert (root / "train" / "NORMAL" / "bomb.png").stat().st_size < 200_000
    with pytest.raises(DataError, match="bomb.png is 10000x6000 pixels; allowed: at most"):
        load_data(CycleConfig(dataset="pneumonia", data_root=str(root), image_size=16))


def test_synthetic_too_large_for_memory_is_refused():
    from psreval_tune.data import memory_limit_bytes

    samples = memory_limit_bytes() // (3 * 64 * 64 * 4) + 1  # just over all memory, half of it is the limit
    with pytest.raises(DataError, match=r"image_size=64 needs .* GB .*; allowed: at most"):
        load_data(CycleConfig(dataset="synthetic", image_size=64, train_samples=samples))

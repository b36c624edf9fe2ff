"""Trained non-private twins, shared by every trial of every node, each trained once.

A twin (and any result keyed by its training config) lives in one folder every node reaches: a local or
shared path (NFS, a cluster's shared disk) or a URI of a filesystem pyarrow opens (``s3://...``,
``gs://...``): the sweep's storage (``<storage>/twin-cache``). A trial that needs a twin

1. loads ``twin-<training key>-<code version>.pt`` if it is there (``torch.load(weights_only=True)``; a
   torn or foreign file is a miss, never an error);
2. else takes the key's lease, ``twin-<key>.lease.<n>``: created with O_CREAT|O_EXCL on a local path, and on
   a remote filesystem (no atomic create-if-absent there) written when absent, then read back after
   ``settle_s``: only the writer that reads its own owner id back holds it. The holder trains the twin,
   writes it atomically (a temporary file, then a rename), records the training under ``trained/`` and
   removes its own lease. A thread rewrites the lease every ``heartbeat_s`` while it trains;
3. else waits: it polls until the twin appears, or until the lease is released without one (the holder
   failed: the next waiter takes the next lease), or stale: unchanged for ``stale_s`` seconds as the waiter
   sees it, or its heartbeat older than that (a dead holder): then it creates lease ``n + 1`` and trains.
   Leases of dead holders are left where they are (never delete what this process did not create).

The key is the config's ``training_key()`` plus :func:`code_version`: the package version, torch's, and a
hash of the source files that determine training, so a twin of other code is never reused.

No Ray and no MLflow here: the cycle imports this module. pyarrow is imported only for a URI.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from .config import CycleConfig

# The modules (a name.py, or a name/ package) and data files whose code trains a model: a change to any of
# them changes code_version(), so every cached twin is trained again. Evaluation, attack-matrix and
# tracking code are left out: they do not change the weights.
TRAINING_SOURCES = (
    "config",
    "recipes",
    "recipes.toml",
    "data",
    "_torchvision",
    "models",
    "federated",
    "privacy",
    "bookkeeping",
    "attacks",  # adversarial training and train-time attacks run them
    "datasets",
    "aggregators",
    "accountants",
    "client_dp",
    "threats",
    "registry",
    "evaluate",  # the validation accuracy in the twin's history
)
FOLDER = "twin-cache"  # in the sweep's storage
TRAINED = "trained"  # one record per training: trained/<key>.<owner>.json
SUFFIX = ".pt"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """12 hex digits: the package and torch versions and the bytes of TRAINING_SOURCES (computed once)."""
    from . import __version__

    package = Path(__file__).resolve().parent
    digest = hashlib.sha256(f"psreval-tune {__version__}\ntorch {torch.__version__}\n".encode())
    for name in TRAINING_SOURCES:
        candidates = [package / name] if "." in name else [package / f"{name}.py", package / name]
        for path in candidates:
            files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
            for file in files:
                digest.update(f"\n{file.relative_to(package).as_posix()}\n".encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def cache_location(storage: str) -> str:
    """The twin cache of a sweep storage (a local path or a URI)."""
    return f"{str(storage).rstrip('/')}/{FOLDER}"


def cache_key(cfg: CycleConfig) -> str:
    return f"{cfg.training_key()}-{code_version()}"


class CacheError(Exception):
    """A cache file that is not a twin: torn, foreign or of another layout."""


def check_payload(payload: Any) -> dict:
    """A twin as torch.load read it back: {"state_dict": {name: tensor}, "history": [dict, ...]}."""
    if not isinstance(payload, dict):
        raise CacheError(f"holds a {type(payload).__name__}, not a twin")
    state, history = payload.get("state_dict"), payload.get("history")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CacheError("its state_dict is not a dict of tensors")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise CacheError("its history is not a list of rounds")
    return payload


# --- storage: a local folder (atomic create) or a pyarrow filesystem ------------------------------------


class _Local:
    """A folder on this machine's filesystem (also a shared one: NFS honours O_EXCL since v3)."""

    atomic_create = True

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def path(self, name: str) -> str:
        return str(self.root / name)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, name: str, data: bytes) -> None:
        """Atomically: readers see the old file or the whole new one."""
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with_suppressed(os.unlink, tmp)  # our own temporary file
            raise

    def create(self, name: str, data: bytes) -> bool:
        """Create ``name`` holding ``data`` if it does not exist; False if it does."""
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True

    def remove(self, name: str) -> None:
        with_suppressed(os.unlink, self.root / name)

    def list(self, folder: str = "") -> list[str]:
        try:
            return sorted(p.name for p in (self.root / folder).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []


class _Arrow:
    """A folder of a pyarrow filesystem (s3://, gs://, ...). No atomic create there: see TwinCache."""

    atomic_create = False

    def __init__(self, root: str, filesystem: Any = None):
        import pyarrow
        import pyarrow.fs

        self.pafs = pyarrow.fs
        if filesystem is None:
            try:
                filesystem, root = pyarrow.fs.FileSystem.from_uri(root)
            except (pyarrow.ArrowInvalid, ValueError):  # a scheme only fsspec knows (az://, ...), as Tune does
                import fsspec

                fs, path = fsspec.core.url_to_fs(root)
                filesystem, root = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path
        self.fs, self.root = filesystem, root.rstrip("/")

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def read(self, name: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self.path(name)) as fh:
                return fh.read()
        except (FileNotFoundError, OSError):
            return None

    def write(self, name: str, data: bytes) -> None:
        """A temporary object, then a move: an object store's PUT / copy shows the whole object or none."""
        target = self.path(name)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{name.rsplit('/', 1)[-1]}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(tmp) as fh:
            fh.write(data)
        try:
            self.fs.move(tmp, target)
        except BaseException:
            with_suppressed(self.fs.delete_file, tmp)
            raise

    def create(self, name: str, data: bytes) -> bool:
        if self.read(name) is not None:
            return False
        self.write(name, data)
        return True

    def remove(self, name: str) -> None:
        with_suppressed(self.fs.delete_file, self.path(name))

    def list(self, folder: str = "") -> list[str]:
        base = self.path(folder).rstrip("/") if folder else self.root
        try:
            infos = self.fs.get_file_info(self.pafs.FileSelector(base, allow_not_found=True))
        except OSError:
            return []
        return sorted(info.base_name for info in infos)


def with_suppressed(fn: Callable, *args: Any) -> None:
    try:
        fn(*args)
    except OSError:
        pass


def _store(root: str | os.PathLike, filesystem: Any = None) -> _Local | _Arrow:
    text = str(root)
    if filesystem is not None:
        return _Arrow(text, filesystem)
    if text.startswith("file://"):
        return _Local(text[len("file://") :])
    if "://" in text:
        return _Arrow(text)
    return _Local(text)


# --- the cache -------------------------------------------------------------------------------------------


class TwinCache:
    """Trained non-private twins in ``root`` (a local/shared path or a URI), keyed by training config and code
    version, each trained once by whichever trial needs it first while the others wait for it."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        filesystem: Any = None,
        poll_s: float = 0.5,
        heartbeat_s: float = 5.0,
        stale_s: float = 60.0,
        settle_s: float = 2.0,
        version: str | None = None,
    ):
        self.root = root
        self.store = _store(root, filesystem)
        self.poll_s, self.heartbeat_s, self.stale_s, self.settle_s = poll_s, heartbeat_s, stale_s, settle_s
        self.version = version  # None: code_version(); tests pass another to stand for other code
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # names
    def key(self, cfg: CycleConfig) -> str:
        return f"{cfg.training_key()}-{self.version or code_version()}"

    def name(self, cfg: CycleConfig) -> str:
        return f"twin-{self.key(cfg)}{SUFFIX}"

    def path(self, cfg: CycleConfig) -> str:
        """Where the twin of ``cfg`` is (or will be)."""
        return self.store.path(self.name(cfg))

    def _lease(self, cfg: CycleConfig, n: int) -> str:
        return f"twin-{self.key(cfg)}.lease.{n}"

    # plain load / save
    def load(self, cfg: CycleConfig) -> dict | None:
        """The cached twin of ``cfg``, or None if there is none or it does not load (torn, foreign)."""
        try:
            return self._read(cfg)
        except CacheError:
            return None

    def _read(self, cfg: CycleConfig) -> dict | None:
        data = self.store.read(self.name(cfg))
        if data is None:
            return None
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file
            raise CacheError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        return check_payload(payload)

    def save(self, cfg: CycleConfig, payload: dict) -> None:
        buffer = io.BytesIO()
        torch.save(check_payload(payload), buffer)
        self.store.write(self.name(cfg), buffer.getvalue())  # atomic: no reader ever sees half a twin

    # training records
    def trainings(self, cfg: CycleConfig | None = None) -> list[dict]:
        """Records of every training this cache saw (of ``cfg``'s key only, if given), oldest first."""
        prefix = f"twin-{self.key(cfg)}." if cfg is not None else "twin-"
        found = []
        for name in self.store.list(TRAINED):
            if name.startswith(prefix) and name.endswith(".json"):
                data = self.store.read(f"{TRAINED}/{name}")
                try:
                    found.append(json.loads(data or b""))
                except ValueError:
                    continue
        return sorted(found, key=lambda r: r.get("finished", 0))

    # exactly once
    def get_or_train(
        self, cfg: CycleConfig, train: Callable[[], dict], progress: Callable[[str], None] | None = None
    ) -> tuple[dict, bool]:
        """The twin of ``cfg`` from the cache, or from ``train()`` (which returns the payload) if no other
        process is training it; waits for one that is. Returns (payload, whether this call trained it)."""
        say = progress or (lambda msg: None)
        seen: dict[str, tuple[bytes, float]] = {}  # lease -> (its content, when it last changed)
        told: str | None = None  # the holder last named in a waiting message
        torn = False
        while True:
            try:
                hit = self._read(cfg)
            except CacheError as exc:
                hit = None
                if not torn:
                    say(f"[nonprivate] twin {cfg.training_key()}: the cached file does not load ({exc}); not used")
                    torn = True
            if hit is not None:
                return hit, False
            leases = self._leases(cfg)
            top = max(leases) if leases else -1
            holder = self.store.read(self._lease(cfg, top)) if top >= 0 else None
            if holder is None or self._stale(self._lease(cfg, top), holder, seen):
                n = top + 1 if holder is not None else max(top, 0)
                if self._acquire(cfg, n):
                    try:
                        return self._train_held(cfg, n, train)
                    finally:
                        self.store.remove(self._lease(cfg, n))  # ours: created by _acquire
                continue
            if told != (_owner_id(holder) or _owner(holder)):  # once per holder
                told = _owner_id(holder) or _owner(holder)
                say(f"[nonprivate] twin {cfg.training_key()} is being trained by {_owner(holder)}; waiting for it")
            time.sleep(self.poll_s)

    def _leases(self, cfg: CycleConfig) -> list[int]:
        prefix = f"twin-{self.key(cfg)}.lease."
        out = []
        for name in self.store.list():
            if name.startswith(prefix) and name[len(prefix) :].isdigit():
                out.append(int(name[len(prefix) :]))
        return out

    def _stale(self, lease: str, holder: bytes, seen: dict[str, tuple[bytes, float]]) -> bool:
        """Unchanged for stale_s as this process watched it, or its own heartbeat older than stale_s."""
        now = time.monotonic()
        last = seen.get(lease)
        if last is None or last[0] != holder:
            seen[lease] = (holder, now)
            last = seen[lease]
        try:
            beat = float(json.loads(holder).get("heartbeat", 0))
        except (ValueError, AttributeError, TypeError):
            beat = 0.0  # not a lease we wrote: only watching it tells
        return now - last[1] > self.stale_s or (beat > 0 and time.time() - beat > self.stale_s)

    def _lease_body(self, beat: int) -> bytes:
        return json.dumps(
            {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time(), "n": beat}
        ).encode()

    def _acquire(self, cfg: CycleConfig, n: int) -> bool:
        lease = self._lease(cfg, n)
        if not self.store.create(lease, self._lease_body(0)):
            return False
        if self.store.atomic_create:
            return True
        # No create-if-absent on an object store: two writers may both have seen it absent. Each reads it
        # back once every racer's write has landed; the last write wins, and only its writer holds it.
        time.sleep(self.settle_s)
        body = self.store.read(lease)
        return body is not None and _owner_id(body) == self.owner

    def _train_held(self, cfg: CycleConfig, n: int, train: Callable[[], dict]) -> tuple[dict, bool]:
        lease = self._lease(cfg, n)
        stop = threading.Event()

        def beat() -> None:
            count = 0
            while not stop.wait(self.heartbeat_s):
                count += 1
                try:
                    self.store.write(lease, self._lease_body(count))
                except Exception:  # noqa: BLE001 - a missed beat: waiters allow stale_s for it
                    pass

        thread = threading.Thread(target=beat, name=f"twin-lease-{n}", daemon=True)
        start = time.time()
        thread.start()
        try:
            hit = self.load(cfg)  # written between our last look and the lease: not trained twice
            if hit is not None:
                return hit, False
            payload = train()
            self.save(cfg, payload)
        finally:
            stop.set()
            thread.join()
        record = {
            "key": self.key(cfg),
            "training_key": cfg.training_key(),
            "code_version": self.version or code_version(),
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": start,
            "finished": time.time(),
            "seconds": round(time.time() - start, 3),
            "lease": n,
        }
        self.store.write(f"{TRAINED}/twin-{self.key(cfg)}.{self.owner}.json", json.dumps(record).encode())
        return payload, True


def _owner_id(body: bytes) -> str | None:
    try:
        return json.loads(body).get("owner")
    except (ValueError, AttributeError):
        return None


def _owner(body: bytes) -> str:
    try:
        d = json.loads(body)
        return f"host {d['host']} pid {d['pid']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


def cached_training_keys(root: str | os.PathLike, version: str | None = None) -> set[str]:
    """Training keys of the twins in the cache at ``root`` for this code version (the sweep's dry run)."""
    store = _store(root)
    tail = f"-{version or code_version()}{SUFFIX}"
    return {n[len("twin-") : -len(tail)] for n in store.list() if n.startswith("twin-") and n.endswith(tail)}

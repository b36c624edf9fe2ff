"""The MLflow UI over the demo's store, opened in headless Chromium: the experiment
page must list the smoke sweep's parent run and its six trial runs.

Chromium is Debian's `chromium` package; the `chromium` fixture installs it with
apt-get when it is missing (the test fails if it cannot; PSREVAL_SKIP_BROWSER=1
skips it). The screenshots are kept as test-artifacts/mlflow_ui.png and
test-artifacts/mlflow_ui_sweep.png.

The plain runs tab (`#/experiments/<id>/runs?workflowType=machine_learning`, MLflow 3's
machine-learning runs table rather than its GenAI view) nests child runs under their
parent, collapsed, so it shows only "smoke" (with an expander). MLflow nests only while
the table is sorted by creation time (or not sorted at all) and has no search filter, so
the test also opens it sorted by run name (`orderByKey=tags.`mlflow.runName``), which
lists all seven runs flat. Last, the address the sweep printed (and `psreval ui` prints):
the sweep's own view (psreval_tune.ui, `viewStateShareKey=<key>`): its runs flat, filtered
on its tag, sorted by acc_wb_pgd_worst, with the key metrics as columns (their headers in
the page). tests/test_mlflow_ui_trials.py checks that view's rows and values on a small
store without a sweep.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from mlflow import MlflowClient
from sweep_helpers import ROOT, env, free_port, kill_group, sweep_runs, wait_for

from psreval_tune.tracking import KEY_METRICS, sweep_view_key
from psreval_tune.ui import NO_JOB_RUNNER, experiment_runs_url

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # the smoke sweep, an MLflow server and headless Chromium

CHROMIUM = Path("/usr/bin/chromium")
APT_TIMEOUT = 600  # apt-get update + install together
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "mlflow_ui.png"
SWEEP_SHOT = ARTIFACTS / "mlflow_ui_sweep.png"
WIDE = (2400, 1000)  # ag-grid renders only the columns in view
WINDOW = (1600, 1000)
SMOKE_TRIALS = 6


def _apt(args: list[str], deadline: float) -> subprocess.CompletedProcess:
    left = deadline - time.monotonic()
    if left <= 0:
        pytest.fail(f"installing chromium took longer than {APT_TIMEOUT}s")
    try:
        return subprocess.run(
            ["apt-get", *args],
            capture_output=True,
            text=True,
            timeout=left,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"`apt-get {' '.join(args)}` did not finish within the {APT_TIMEOUT}s allowed for installing chromium"
        )


@pytest.fixture(scope="session")  # session scope: set up before the (session) smoke sweep, so it fails fast
def chromium() -> Path:
    """/usr/bin/chromium, installed from Debian's mirror when missing."""
    if os.environ.get("PSREVAL_SKIP_BROWSER") == "1":
        pytest.skip("PSREVAL_SKIP_BROWSER=1")
    if CHROMIUM.exists():
        return CHROMIUM
    how = "run `apt-get install -y --no-install-recommends chromium` as root, or set PSREVAL_SKIP_BROWSER=1"
    if shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM} is missing and there is no apt-get to install it; {how}")
    if os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} is missing and installing it needs root (euid {os.geteuid()}); {how}")
    deadline = time.monotonic() + APT_TIMEOUT
    for args in (["update"], ["install", "-y", "--no-install-recommends", "chromium"]):
        proc = _apt(args, deadline)
        if proc.returncode != 0:
            pytest.fail(
                f"`apt-get {' '.join(args)}` failed (exit {proc.returncode}); {how}\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


def _healthy(url: str, server: subprocess.Popen, log: Path):
    if server.poll() is not None:
        raise AssertionError(f"mlflow ui exited with {server.returncode}:\n{log.read_text()[-3000:]}")
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture
def mlflow_ui(smoke_sweep, tmp_path):
    """`make ui` over the smoke sweep's store, on a free loopback port: (base url, store uri, log)."""
    run_dir = smoke_sweep.run_dir
    store = f"sqlite:///{run_dir}/mlflow.db"
    port = free_port()
    log = tmp_path / "mlflow-ui.log"
    with open(log, "w") as fh:
        # One worker instead of the default four: this is a 2-core machine. Run from the
        # run dir, so nothing the server might create lands in the repository.
        server = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "mlflow"),
                "ui",
                "--backend-store-uri",
                store,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=run_dir,
            env=env(**{NO_JOB_RUNNER: "false"}),  # no GenAI job runner, as psreval ui starts it
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url, server, log), timeout=180, what=f"{url}/health")
        yield url, store, log
    finally:
        kill_group(server)


class _RunLinks(HTMLParser):
    """Links to run pages in the rendered runs table: run id -> link text."""

    def __init__(self, experiment_id: str):
        super().__init__()
        self.prefix = f"#/experiments/{experiment_id}/runs/"
        self.links: dict[str, str] = {}
        self._open: list[str | None] = []  # run id of each open <a>, None for other links

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href") or ""
            run_id = href[len(self.prefix) :] if href.startswith(self.prefix) else None
            if run_id and "/" not in run_id:
                self.links.setdefault(run_id, "")
                self._open.append(run_id)
            else:
                self._open.append(None)

    def handle_endtag(self, tag):
        if tag == "a" and self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._open and self._open[-1]:
            self.links[self._open[-1]] += data.strip()


def _run_links(dom: str, experiment_id: str) -> dict[str, str]:
    parser = _RunLinks(experiment_id)
    parser.feed(dom)
    return parser.links


def _render(
    chromium: Path,
    url: str,
    profile: Path,
    budget_ms: int,
    screenshot: Path | None = None,
    window: tuple[int, int] = WINDOW,
) -> str:
    """The page's DOM after `budget_ms` of virtual time (and a PNG of it, if asked)."""
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)
    cmd = [
        str(chromium),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
    ]
    if screenshot is not None:
        screenshot.unlink(missing_ok=True)
        cmd.append(f"--screenshot={screenshot}")
    proc = subprocess.Popen(
        [*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError(f"chromium did not finish rendering {url} within 120s") from None
    finally:
        try:  # renderer and zygote processes, should any outlive the browser
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"chromium exited with {proc.returncode} on {url}:\n{err[-3000:]}"
    return out


def _render_until(chromium, url, profile, want: set[str], experiment_id, screenshot=None) -> tuple[str, dict]:
    """Render, giving the React app more virtual time while some wanted run is not listed yet."""
    for budget_ms in (15_000, 45_000):
        dom = _render(chromium, url, profile, budget_ms, screenshot)
        links = _run_links(dom, experiment_id)
        if want <= set(links):
            break
    return dom, links


def _assert_png(path: Path, window: tuple[int, int] = WINDOW) -> None:
    from PIL import Image

    assert path.is_file(), f"chromium wrote no screenshot at {path}"
    size = path.stat().st_size
    assert size > 10_000, f"{path} is only {size} bytes"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == window, (img.format, img.size)
        img.verify()
    with Image.open(path) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, f"{path} is nearly blank ({len(colours)} colours)"


@pytest.mark.skipif(os.environ.get("PSREVAL_SKIP_BROWSER") == "1", reason="PSREVAL_SKIP_BROWSER=1")
@pytest.mark.timeout(900)
def test_mlflow_ui_lists_the_sweep_runs(chromium, mlflow_ui, smoke_sweep, tmp_path):
    started = time.monotonic()  # the server is up already; this times the browser checks
    url, store, log = mlflow_ui
    experiment = MlflowClient(store).get_experiment_by_name("psreval")
    assert experiment is not None, "the smoke sweep logged no experiment 'psreval'"
    exp_id = experiment.experiment_id
    parents, trials = sweep_runs(store)
    smoke = [p for p in parents if p.info.run_name == "smoke"]
    assert len(smoke) == 1, f"expected one sweep run named 'smoke': {[p.info.run_name for p in parents]}"
    parent = smoke[0]
    trials = [t for t in trials if t.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == SMOKE_TRIALS, [t.info.run_name for t in trials]
    expected = {r.info.run_id: r.info.run_name for r in [parent, *trials]}
    ARTIFACTS.mkdir(exist_ok=True)

    # 1. The plain runs tab (workflowType=machine_learning: MLflow 3's machine-learning view, not its GenAI one;
    # what `psreval ui` prints for an experiment without sweeps): the sweep's parent run, its children nested.
    default_url = experiment_runs_url(url, exp_id)
    assert default_url == f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
    dom, links = _render_until(chromium, default_url, tmp_path / "profile-default", {parent.info.run_id}, exp_id)
    assert links.get(parent.info.run_id) == "smoke", (
        f"{default_url} does not list the sweep run 'smoke'; run links: {links}\n{dom[-3000:]}"
    )
    assert f"<strong>{len(expected)}</strong> matching runs" in dom, f"{default_url} does not count 7 runs"

    # 2. The same tab sorted by run name, which MLflow does not nest: every run is a row.
    flat_url = f"{default_url}&orderByKey={quote('tags.`mlflow.runName`')}&orderByAsc=true"
    dom, links = _render_until(
        chromium, flat_url, tmp_path / "profile-flat", set(expected), exp_id, screenshot=SCREENSHOT
    )
    (ARTIFACTS / "mlflow_ui.html").write_text(dom)
    missing = {name for run_id, name in expected.items() if links.get(run_id) != name}
    assert not missing, (
        f"{flat_url} does not list {sorted(missing)}; run links in the page: {links}; "
        f"DOM in {ARTIFACTS / 'mlflow_ui.html'}"
    )
    assert set(links) == set(expected), f"the page lists runs that are not the sweep's: {links}"
    assert 'aria-label="Sort: Run Name"' in dom, "the page ignored orderByKey"
    assert f"<strong>{len(expected)}</strong> matching runs" in dom
    _assert_png(SCREENSHOT)

    # 3. The address the sweep printed last (`results: URL after ...`, for the default port 5000), on this
    # server: the sweep's view, every run of the sweep a row, flat, with the key metrics as columns.
    proc = smoke_sweep.proc
    printed = re.findall(r"^results: (\S+) after ", proc.stdout, re.M)
    assert printed, f"the sweep printed no results line:\n{proc.stdout[-3000:]}"
    view_url = printed[-1].replace("http://127.0.0.1:5000", url, 1)
    view = f"viewStateShareKey={sweep_view_key('smoke')}"
    assert view_url == f"{url}/#/experiments/{exp_id}/runs?{view}&workflowType=machine_learning", view_url
    dom = ""
    for budget_ms in (15_000, 45_000):
        dom = _render(chromium, view_url, tmp_path / "profile-view", budget_ms, SWEEP_SHOT, window=WIDE)
        links = _run_links(dom, exp_id)
        if set(expected) <= set(links):
            break
    (ARTIFACTS / "mlflow_ui_sweep.html").write_text(dom)
    where = f"DOM in {ARTIFACTS / 'mlflow_ui_sweep.html'}"
    assert "Error loading shared view state" not in dom, where
    missing = {name for run_id, name in expected.items() if links.get(run_id) != name}
    assert not missing, f"{view_url} does not list {sorted(missing)}; run links: {links}; {where}"
    assert set(links) == set(expected), f"the page lists runs that are not the sweep's: {links}"
    assert f"<strong>{len(expected)}</strong> matching runs" in dom, where
    assert 'aria-label="Sort: acc_wb_pgd_worst"' in dom, where
    logged = [m for m in KEY_METRICS if any(m in t.data.metrics for t in trials)]
    assert "acc_clean_float" in logged and "acc_wb_pgd_worst" in logged, logged
    headers = set(re.findall(r'data-testid="sort-header-([^"]+)"', dom))
    assert set(logged) <= headers, f"metric columns {logged}, headers {sorted(headers)}; {where}"
    _assert_png(SWEEP_SHOT, WIDE)

    server_errors = [line for line in log.read_text().splitlines() if '" 5' in line and "HTTP/1.1" in line]
    assert not server_errors, server_errors
    print(f"UI checks took {time.monotonic() - started:.1f}s; screenshot: {SCREENSHOT}")

"""The MLflow UI opens on a sweep's trials (issue 24, "First contact", point 2).

A sweep's worth of runs is tracked with the project's own Tracker (a sweep run and three
trial runs with metrics and params; no training), so the tags are the real ones. Then:

- the sweep run carries a description (mlflow.note.content) and the sweep's summary
  metrics (trials done, best and median of the key metrics), and the experiment holds
  the sweep's runs-table view (no browser needed);
- `psreval ui` is started on a free 127.0.0.1 port over that store and the address it
  prints is opened in headless Chromium (Debian's /usr/bin/chromium, `make browser`;
  PSREVAL_SKIP_BROWSER=1 skips): every trial is a row of the runs table, flat (not
  nested under a collapsed sweep run), with the key metrics as column headers and each
  trial's values in its row; the sweep and its printed address (psreval_tune.ui's
  results_hint) name the same table. The screenshot is test-artifacts/mlflow_ui_trials.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sweep_helpers import ROOT, env, free_port, kill_group, wait_for
from test_mlflow_ui import _assert_png, _render, chromium  # noqa: F401 - chromium: the fixture

from psreval_tune import ui
from psreval_tune.tracking import (
    TAG_NOTE,
    VIEW_TAG_PREFIX,
    Tracker,
    TrackingSpec,
    opened_view,
    sweep_view_key,
)

SWEEP = "first-contact"
# trial run name -> (metrics, params); acc_wb_pgd_worst orders the table, best first
TRIALS = {
    "trial_a_eps1": (
        {"acc_clean_float": 0.9125, "acc_wb_pgd_worst": 0.5375, "epsilon_spent": 1.0, "size_reduction_pct": 73.5},
        {"epsilon": 1.0, "seed": 0},
    ),
    "trial_b_eps2": (
        {"acc_clean_float": 0.9375, "acc_wb_pgd_worst": 0.6125, "epsilon_spent": 2.0, "size_reduction_pct": 74.25},
        {"epsilon": 2.0, "seed": 0},
    ),
    "trial_c_eps4": (
        {"acc_clean_float": 0.8625, "acc_wb_pgd_worst": 0.4875, "epsilon_spent": 4.0, "size_reduction_pct": 72.75},
        {"epsilon": 4.0, "seed": 1},
    ),
}
COLUMNS = ("acc_clean_float", "acc_wb_pgd_worst", "epsilon_spent", "size_reduction_pct")
WINDOW = (2400, 1000)  # wide: ag-grid renders only the columns in view
SCREENSHOT = ROOT / "test-artifacts" / "mlflow_ui_trials.png"


def _track_sweep(folder: Path, empty_store: Path) -> tuple[Tracker, str, dict[str, str]]:
    """(tracker, sweep run id, {trial run id: run name}): a finished sweep of three finished trials, tracked
    into FOLDER/mlflow.db (a copy of the empty store)."""
    shutil.copyfile(empty_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder}/mlflow.db"
    tracker = Tracker(TrackingSpec(uri, "psreval", SWEEP, provenance=(("git_commit", "abc"),)))
    parent = tracker.sweep_run({"kind": "grid"})
    trials = {}
    for i, (name, (metrics, params)) in enumerate(TRIALS.items()):
        run_id, existed = tracker.trial_run(parent, f"t{i}", name)
        assert not existed
        tracker.log_params(run_id, params)
        tracker.log_metrics(run_id, metrics, step=0)
        tracker.finish(run_id)
        trials[run_id] = name
    tracker.finish(parent)
    return tracker, parent, trials


def test_sweep_run_has_description_summary_and_view(tmp_path, empty_store):
    tracker, parent, trials = _track_sweep(tmp_path, empty_store)
    run = tracker.client.get_run(parent)
    m = run.data.metrics
    assert (m["sweep/trials"], m["sweep/trials_finished"], m["sweep/trials_failed"]) == (3, 3, 0)
    assert m["best/acc_wb_pgd_worst"] == 0.6125 and m["median/acc_wb_pgd_worst"] == 0.5375
    assert m["best/acc_clean_float"] == 0.9375 and m["median/acc_clean_float"] == 0.9125
    assert m["best/epsilon_spent"] == 1.0  # lower is better
    assert m["best/size_reduction_pct"] == 74.25
    assert not any(k.startswith(("best/acc_clean_int8", "median/acc_clean_int8")) for k in m)  # no trial has it
    note = run.data.tags[TAG_NOTE]
    key = sweep_view_key(SWEEP)
    assert f"**Sweep `{SWEEP}`** (grid)" in note and "3 trials: 3 finished, 0 failed." in note
    assert f"#/experiments/{tracker.experiment_id}/runs?viewStateShareKey={key}&workflowType=machine_learning" in note
    assert "| acc_wb_pgd_worst | 0.6125 | 0.5375 | trial_b_eps2 | 3 |" in note

    # the view MLflow's UI loads for viewStateShareKey=<key>: an envelope whose state is the view's JSON
    envelope = json.loads(tracker.client.get_experiment(tracker.experiment_id).tags[VIEW_TAG_PREFIX + key])
    assert envelope["name"] == f"sweep {SWEEP}: trials" and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    assert state["searchFilter"] == f"tags.`psreval.sweep` = '{SWEEP}'"
    assert state["orderByKey"] == "metrics.`acc_wb_pgd_worst`" and state["orderByAsc"] is False
    assert {f"metrics.`{c}`" for c in COLUMNS} <= set(state["selectedColumns"])
    # the filter selects the sweep's runs
    found = tracker.client.search_runs([tracker.experiment_id], filter_string=state["searchFilter"])
    assert {r.info.run_id for r in found} == {parent, *trials}

    # what the sweep prints: the view of the sweep run this process opened, with or without its name
    uri = tracker.spec.tracking_uri
    assert opened_view(uri, tracker.experiment_id) == key
    want = f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs?viewStateShareKey={key}&"
    assert ui.results_hint(uri, tracker.experiment_id, str(tmp_path)).startswith(want)
    assert ui.results_hint(uri, tracker.experiment_id, sweep=SWEEP).startswith(want)
    # a store without the view (refused): the filter and sort as URL parameters, flat but default columns
    other = ui.results_hint(uri, tracker.experiment_id, sweep="other")
    assert "searchFilter=tags.%60psreval.sweep%60+%3D+%27other%27&orderByKey=metrics.%60acc_wb_pgd_worst%60" in other

    # resumed: the same run, reopened, keeps its description until it ends again
    again = Tracker(tracker.spec)
    assert again.sweep_run({"kind": "grid"}) == parent
    assert again.client.get_run(parent).data.tags[TAG_NOTE] == note
    run_id, existed = again.trial_run(parent, "t3", "trial_d_failed")
    again.fail(run_id, "boom")
    again.fail(parent, "stopped")
    run = again.client.get_run(parent)
    assert run.info.status == "FAILED" and run.data.metrics["sweep/trials_failed"] == 1
    assert "4 trials: 3 finished, 1 failed." in run.data.tags[TAG_NOTE]


def test_psreval_ui_sweep_flag(tmp_path, monkeypatch, capsys, empty_store):
    tracker, _, _ = _track_sweep(tmp_path, empty_store)
    uri, exp = tracker.spec.tracking_uri, tracker.experiment_id
    started = []
    monkeypatch.setattr(os, "execve", lambda *a: started.append(a))
    monkeypatch.delenv(ui.NO_JOB_RUNNER, raising=False)
    assert ui.main(["--tracking-uri", uri, "--port", "5123", "--workers", "1"]) == 0
    assert started[0][1][-2:] == ["--workers", "1"]
    assert started[0][2][ui.NO_JOB_RUNNER] == "false"  # no GenAI job runner beside the UI
    monkeypatch.setenv(ui.NO_JOB_RUNNER, "true")  # unless the user asks for it
    assert ui.main(["--tracking-uri", uri, "--port", "5123"]) == 0 and started[1][2][ui.NO_JOB_RUNNER] == "true"
    key = sweep_view_key(SWEEP)
    url = f"http://127.0.0.1:5123/#/experiments/{exp}/runs?viewStateShareKey={key}&workflowType=machine_learning"
    assert f"MLflow UI: {url}  (Ctrl-C to stop)" in capsys.readouterr().out
    # a sweep tracked before views were: `psreval ui` stores its view
    tracker.client.delete_experiment_tag(exp, VIEW_TAG_PREFIX + key)
    assert ui.main(["--tracking-uri", uri, "--port", "5123", "--sweep", SWEEP]) == 0
    assert url in capsys.readouterr().out
    assert VIEW_TAG_PREFIX + key in tracker.client.get_experiment(exp).tags
    assert ui.main(["--tracking-uri", uri, "--sweep", "nope"]) == 2
    assert "--sweep='nope': no such sweep in experiment 'psreval'" in capsys.readouterr().err


class _Rows(HTMLParser):
    """The rendered runs table: run id (ag-grid's row-id) -> {column id: text}; and the header labels."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.position: dict[str, int] = {}  # run id -> row index (ag-grid places rows by it, not DOM order)
        self.headers: list[str] = []
        self._stack: list[tuple[str, str | None, str | None]] = []  # (tag, row id, column id) per open element

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        row, col = (self._stack[-1][1], self._stack[-1][2]) if self._stack else (None, None)
        if a.get("role") == "row" and a.get("row-id"):
            row, col = a["row-id"], None
            self.rows.setdefault(row, {})
            if (a.get("row-index") or "").isdigit():
                self.position[row] = int(a["row-index"])
        if row and a.get("role") == "gridcell" and a.get("col-id"):
            col = a["col-id"]
            self.rows[row].setdefault(col, "")
        if (a.get("data-testid") or "").startswith("sort-header-"):
            self.headers.append(a["data-testid"][len("sort-header-") :])
        if tag not in ("br", "img", "input", "meta", "link", "hr", "path", "rect", "circle"):
            self._stack.append((tag, row, col))

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                return

    def handle_data(self, data):
        if self._stack and self._stack[-1][1] and self._stack[-1][2]:
            _, row, col = self._stack[-1]
            self.rows[row][col] += data.strip()


def _table(dom: str) -> _Rows:
    parser = _Rows()
    parser.feed(dom)
    return parser


def _healthy(url: str, server: subprocess.Popen, log: Path) -> bool:
    if server.poll() is not None:
        raise AssertionError(f"psreval ui exited with {server.returncode}:\n{log.read_text()[-3000:]}")
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PSREVAL_SKIP_BROWSER") == "1", reason="PSREVAL_SKIP_BROWSER=1")
@pytest.mark.timeout(420)
def test_printed_url_opens_on_the_trials(chromium, tmp_path, empty_store):  # noqa: F811 - the imported fixture
    tracker, parent, trials = _track_sweep(tmp_path, empty_store)
    exp = tracker.experiment_id
    port = free_port()
    log = tmp_path / "psreval-ui.log"
    with open(log, "w") as fh:  # `psreval ui` as a user starts it; one worker on this 2-core machine
        server = subprocess.Popen(
            [sys.executable, "-m", "psreval_tune.ui", "--tracking-uri", tracker.spec.tracking_uri]
            + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=tmp_path,
            env=env(),  # psreval ui turns MLflow's job runner off itself
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        first = wait_for(
            lambda: _healthy(base, server, log) and log.read_text().splitlines()[0], timeout=180, what=f"{base}"
        )
        assert first.startswith("MLflow UI: ") and first.endswith("  (Ctrl-C to stop)"), first
        url = first[len("MLflow UI: ") : -len("  (Ctrl-C to stop)")]
        key = sweep_view_key(SWEEP)
        assert url == f"{base}/#/experiments/{exp}/runs?viewStateShareKey={key}&workflowType=machine_learning"
        # the sweep's own printed address names the same table (on the default port)
        hint = ui.results_hint(tracker.spec.tracking_uri, exp)
        assert hint.startswith(url.replace(f":{port}/", ":5000/") + " after `psreval ui"), hint

        started = time.monotonic()
        SCREENSHOT.parent.mkdir(exist_ok=True)
        for budget_ms in (15_000, 45_000):  # more virtual time for the React app if a trial is missing
            dom = _render(chromium, url, tmp_path / "profile", budget_ms, SCREENSHOT, window=WINDOW)
            table = _table(dom)
            if set(trials) <= set(table.rows):
                break
        (SCREENSHOT.parent / "mlflow_ui_trials.html").write_text(dom)
        where = f"DOM in {SCREENSHOT.parent / 'mlflow_ui_trials.html'}"
        assert "Error loading shared view state" not in dom, where

        # a row per trial (and the sweep's run), flat: no other run, no "expand" of a collapsed parent
        assert set(table.rows) == {parent, *trials}, f"rows {table.rows}; {where}"
        assert "<strong>4</strong> matching runs" in dom, where
        for run_id, name in trials.items():
            # the cell's text: the run's colour (#rrggbb, its chart colour) and its name
            assert table.rows[run_id].get("attributes.`Run Name`", "").endswith(name), (name, table.rows[run_id])
        # the key metrics as columns, each trial's values in its row; sorted by acc_wb_pgd_worst, best first
        assert set(COLUMNS) <= set(table.headers), f"column headers {table.headers}; {where}"
        assert 'aria-label="Sort: acc_wb_pgd_worst"' in dom, where
        for run_id, name in trials.items():
            metrics, params = TRIALS[name]
            for column in COLUMNS:
                shown = table.rows[run_id].get(f"metrics.`{column}`")
                assert shown is not None and float(shown) == pytest.approx(metrics[column], abs=1e-4), (
                    name,
                    column,
                    shown,
                )
            assert float(table.rows[run_id]["params.`epsilon`"]) == params["epsilon"]
        order = [trials[r] for r in sorted(trials, key=lambda r: table.position[r])]
        assert order == sorted(TRIALS, key=lambda n: -TRIALS[n][0]["acc_wb_pgd_worst"]), order
        _assert_png(SCREENSHOT, WINDOW)
        errors = [line for line in log.read_text().splitlines() if '" 5' in line and "HTTP/1.1" in line]
        assert not errors, errors
        print(f"browser checks took {time.monotonic() - started:.1f}s; screenshot: {SCREENSHOT}")
    finally:
        kill_group(server)

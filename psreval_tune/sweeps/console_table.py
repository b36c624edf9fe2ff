"""The sweep's console, as pure functions: no Ray, no threads, no terminal.

A trial's phase comes from the progress messages of its cycle (``TrialPhase``); Tune's view of
it (status, last per-round result) from the driver (``BoardCallback`` in progress.py). ``Board``
holds both; ``table`` and ``EventLog`` turn its rows into console lines:

- ``table``: the status table, refreshed in place on a terminal, at most WIDTH characters wide;
- ``EventLog``: for a pipe or a file, one line when a trial's status or phase changes, and a short
  table of the running trials at most every ``every_s`` seconds.

A row is a dict: trial, status (Tune's: PENDING, RUNNING, TERMINATED, ERROR, PAUSED), round,
rounds, acc (validation accuracy), eps (epsilon spent), phase, label (the trial's setting).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

WIDTH = 100  # no console line of the sweep's own is wider

# --- the trial side: progress messages of run_cycle -> phase -----------------------------------

ROUND = re.compile(
    r"\[(?P<who>[\w-]+)\] round (?P<k>\d+)/(?P<n>\d+)\s+loss \S+\s+val acc (?P<acc>\S+)"
    r"(?:\s+eps (?P<eps>\S+))?"
)
RESUMED = re.compile(r"\[(?P<who>[\w-]+)\] resumed from a checkpoint after round (?P<k>\d+)")
TWIN_CACHED = re.compile(r"\[nonprivate\] twin \S+ loaded from cache")
ATTACK = re.compile(r"attack (?P<name>\S+) run (?P<r>\d+)/(?P<n>\d+) done")
WARNING = "! "  # trial_warnings.PREFIX: a line shown under the table, and once in the event log


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


class TrialPhase:
    """What one trial is doing, from its cycle's progress messages (psreval_tune.cycle):
    training its own model, then (private, with a twin) the non-private twin, then the attacks.

    ``state`` is the dict sent to the board: phase, round, rounds, acc, eps, and path: the phases
    (training, twin, attacks) entered so far, so that a console that looks seconds apart misses none."""

    def __init__(self, rounds: int, twin: bool, main: str = "dp"):
        self.twin, self.main = twin, main
        self.state: dict[str, Any] = {
            "phase": "training",
            "round": 0,
            "rounds": rounds,
            "acc": None,
            "eps": None,
            "path": ["training"],
        }

    def _after_training(self) -> str:
        return "twin" if self.twin else "attacks"

    def apply(self, message: str) -> bool:
        """Update from one message; whether the state changed. Messages it does not know change nothing."""
        before = {**self.state, "path": list(self.state["path"])}
        s = self.state
        if m := ROUND.match(message):
            k, n = int(m["k"]), int(m["n"])
            if m["who"] == self.main:
                s.update(round=k, rounds=n, acc=_number(m["acc"]), eps=_number(m["eps"]))
                s["phase"] = self._after_training() if k >= n else "training"
            elif self.twin:
                s["phase"] = "attacks" if k >= n else f"twin {k}/{n}"
        elif m := RESUMED.match(message):
            if m["who"] == self.main:
                s["round"] = int(m["k"])
                s["phase"] = self._after_training() if s["round"] >= (s["rounds"] or 0) else "training"
        elif TWIN_CACHED.match(message) and self.twin:
            s["phase"] = "attacks"
        elif m := ATTACK.match(message):
            s["phase"] = f"attacks {m['name']} {m['r']}/{m['n']}"
        elif message.startswith(WARNING) and message[len(WARNING) :] not in s.setdefault("warnings", []):
            s["warnings"] = [*s["warnings"], message[len(WARNING) :]]
        if s["path"][-1] != s["phase"].split(" ")[0]:
            s["path"].append(s["phase"].split(" ")[0])
        return self.state != before


# --- the board: Tune's rows + the trials' phases -> display rows --------------------------------

FINISHED = {"TERMINATED", "ERROR"}


def merge(tune_row: Mapping[str, Any] | None, phase: Mapping[str, Any] | None, trial: str = "") -> dict[str, Any]:
    """One display row from Tune's view of a trial and its own phase (either may be missing)."""
    t, p = dict(tune_row or {}), dict(phase or {})
    status = t.get("status") or ("RUNNING" if p else "PENDING")
    row = {
        "trial": t.get("trial") or trial,
        "status": status,
        "label": t.get("label") or "",
        "rounds": p.get("rounds") or t.get("rounds"),
        "path": list(p.get("path") or []),
    }
    if p.get("warnings"):
        row["warnings"] = list(p["warnings"])
    live = status == "RUNNING" and p  # the trial's own messages are newer than its last result
    for key, tune_key in (("round", "round"), ("acc", "acc"), ("eps", "eps")):
        mine, tunes = p.get(key), t.get(tune_key)
        row[key] = (mine if mine not in (None, 0) else tunes) if live else (tunes if tunes is not None else mine)
    if status == "TERMINATED":
        row["phase"] = "done" if t.get("complete") else "stopped early"
    elif status == "ERROR":
        row["phase"] = "error"
    elif status == "RUNNING":
        row["phase"] = p.get("phase") or "training"
    else:
        row["phase"] = status.lower()
    return row


class Board:
    """The sweep's progress board (a Ray actor in progress.py; plain here, to test).

    ``trial`` is called by the trials (fire-and-forget), ``tune`` by the driver's Tune callback,
    ``snapshot`` by the console."""

    def __init__(self) -> None:
        self.tune_rows: dict[str, dict] = {}
        self.phases: dict[str, dict] = {}
        self.resources = ""
        self.version = 0

    def ping(self) -> bool:
        return True

    def trial(self, trial_id: str, phase: dict) -> None:
        self.phases[trial_id] = dict(phase)
        self.version += 1

    def tune(self, rows: list[dict], resources: str = "") -> int:
        self.tune_rows = {row["trial"]: dict(row) for row in rows}
        self.resources = resources
        self.version += 1
        return self.version

    def snapshot(self) -> dict[str, Any]:
        ids = [*self.tune_rows, *[t for t in self.phases if t not in self.tune_rows]]
        return {
            "version": self.version,
            "resources": self.resources,
            "rows": [merge(self.tune_rows.get(t), self.phases.get(t), t) for t in ids],
        }


# --- rendering ---------------------------------------------------------------------------------

COLUMNS = (
    ("trial", 5, "<"),
    ("status", 10, "<"),
    ("round", 5, ">"),
    ("val acc", 7, ">"),
    ("eps", 5, ">"),
    ("phase", 17, "<"),
)  # (header, minimum width, alignment); then the label, in what is left
GAP = "  "


def elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def cells(row: Mapping[str, Any]) -> list[str]:
    rnd, rounds = row.get("round"), row.get("rounds")
    acc, eps = _number_or_none(row.get("acc")), _number_or_none(row.get("eps"))
    return [
        str(row.get("trial", "")),
        str(row.get("status", "")),
        f"{rnd or 0}/{rounds}" if rounds else (str(rnd) if rnd else "-"),
        "-" if acc is None else f"{acc:.3f}",
        "-" if eps is None else f"{eps:.2f}",
        str(row.get("phase") or "-") + (" !" if row.get("warnings") else ""),
    ]


def warning_lines(rows: Iterable[Mapping[str, Any]], width: int = WIDTH) -> list[str]:
    """'! TRIAL: warning' under the table: a resume from an older checkpoint, data too small, ..."""
    return [clip(f"! {row.get('trial')}: {text}", width) for row in rows for text in row.get("warnings") or []]


def _number_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN: not shown


def short_labels(labels: Sequence[str]) -> list[str]:
    """Trial labels (trainable.trial_label: dataset-arch-eps-threat-attack-seed) without the parts every
    trial shares, space-separated; unchanged if there is one trial or they do not split alike."""
    parts = [label.split("-") for label in labels]
    if len(parts) < 2 or len({len(p) for p in parts}) != 1:
        return [label.replace("-", " ") for label in labels]
    keep = [i for i in range(len(parts[0])) if len({p[i] for p in parts}) > 1]
    return [" ".join(p[i] for i in keep) for p in parts]


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def counts(rows: Iterable[Mapping[str, Any]]) -> str:
    order = ("running", "pending", "paused", "done", "stopped early", "error")
    seen: dict[str, int] = {}
    for row in rows:
        key = row.get("phase") if row.get("status") in FINISHED else str(row.get("status", "")).lower()
        seen[key] = seen.get(key, 0) + 1
    return ", ".join(f"{seen[k]} {k}" for k in [*order, *sorted(set(seen) - set(order))] if seen.get(k))


def header(rows: Sequence[Mapping[str, Any]], seconds: float, resources: str = "", width: int = WIDTH) -> list[str]:
    """['[m:ss] N trials: 2 running, 1 done, 3 pending | Logical resource usage: ...'], on two lines when
    one is too narrow for it."""
    text = f"[{elapsed(seconds)}] {len(rows)} trial{'s' if len(rows) != 1 else ''}: {counts(rows) or 'none yet'}"
    if not resources:
        return [clip(text, width)]
    one = f"{text} | {resources}"
    return (
        [one] if len(one) <= width else [clip(text, width), clip(" " * (len(elapsed(seconds)) + 3) + resources, width)]
    )


PRIORITY = {"RUNNING": 0, "ERROR": 1, "PAUSED": 2, "PENDING": 3, "TERMINATED": 4}


def table(
    rows: Sequence[Mapping[str, Any]],
    *,
    width: int = WIDTH,
    max_rows: int | None = None,
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> list[str]:
    """The status table: [title,] column headers, one line per trial (in the order given), every line at
    most ``width`` characters. Beyond ``max_rows`` trials the running ones are shown first, then errors,
    pending and finished ones, and one last line counts the trials left out. ``labels``: the rows'
    settings (default: short_labels of theirs)."""
    width = max(20, width)
    shown = list(range(len(rows)))
    if max_rows is not None and len(rows) > max(1, max_rows):
        ranked = sorted(shown, key=lambda i: PRIORITY.get(str(rows[i].get("status")), 5))
        shown = sorted(ranked[: max(1, max_rows - 1)])
    labels = list(labels) if labels is not None else short_labels([str(r.get("label") or "") for r in rows])
    body = [cells(rows[i]) for i in shown]
    widths = [
        max(minimum, len(head), *(len(c[j]) for c in body)) if body else max(minimum, len(head))
        for j, (head, minimum, _) in enumerate(COLUMNS)
    ]
    used = sum(widths) + len(GAP) * len(widths)

    def line(values: Sequence[str], label: str) -> str:
        text = GAP.join(
            v.ljust(w) if align == "<" else v.rjust(w) for v, w, (_, _, align) in zip(values, widths, COLUMNS)
        )
        if label and width - used > 3:
            text += GAP + clip(label, width - used)
        return clip(text.rstrip(), width)

    out = [clip(title, width)] if title else []
    out.append(line([head for head, _, _ in COLUMNS], "setting" if any(labels) else ""))
    out += [line(c, labels[i]) for c, i in zip(body, shown)]
    if len(shown) < len(rows):
        left = [rows[i] for i in range(len(rows)) if i not in set(shown)]
        out.append(clip(f"… {len(left)} more: {counts(left)}", width))
    return out + warning_lines([rows[i] for i in shown], width)


def event_line(row: Mapping[str, Any], seconds: float, label: str = "", width: int = WIDTH) -> str:
    """'[m:ss] TRIAL STATUS PHASE, round k/n, val acc A, eps E | SETTING': one trial's change."""
    trial, status, rnd, acc, eps, phase = cells(row)
    text = f"[{elapsed(seconds)}] {trial} {status} {phase}, round {rnd}, val acc {acc}, eps {eps}"
    return clip(f"{text} | {label}" if label else text, width)


def category(row: Mapping[str, Any]) -> tuple[str, str]:
    """What a change line is printed for: the status, and the phase without its progress counts."""
    phase = str(row.get("phase") or "")
    return str(row.get("status")), phase if row.get("status") in FINISHED else phase.split(" ")[0]


class EventLog:
    """Console lines for a pipe or a file: the header once, a line per trial whose status or phase
    (training, twin, attacks, done, ...) changed, and every ``every_s`` seconds at most a short table
    of the running trials. A phase a trial went through between two looks (its row's path) gets its
    line too, with the numbers of the later look."""

    def __init__(self, every_s: float = 60.0, width: int = WIDTH, max_rows: int = 10):
        self.every_s, self.width, self.max_rows = every_s, width, max_rows
        self.seen: dict[str, tuple[str, str]] = {}
        self.walked: dict[str, int] = {}  # trial -> how much of its path has had its line
        self.warned: set[tuple[str, str]] = set()  # (trial, warning) lines already printed
        self.last_table: float | None = None

    def lines(
        self, rows: Sequence[Mapping[str, Any]], seconds: float, resources: str = "", final: bool = False
    ) -> list[str]:
        out: list[str] = []
        if not rows:  # Tune has not created the trials yet
            return out
        labels = dict(zip([str(r.get("trial")) for r in rows], short_labels([str(r.get("label") or "") for r in rows])))
        if self.last_table is None:
            out += header(rows, seconds, resources, self.width)
            self.last_table = seconds
        for row in rows:
            trial, now = str(row.get("trial")), category(row)
            before = self.seen.get(trial, ("PENDING", "pending"))
            path = list(row.get("path") or [])
            walked = self.walked.get(trial, 0) if len(path) >= self.walked.get(trial, 0) else 0  # 0: a new attempt
            for phase in path[walked:]:
                key = ("RUNNING", phase)
                if key not in (before, now):  # went through it unseen
                    out.append(
                        event_line(
                            {**row, "status": "RUNNING", "phase": phase}, seconds, labels.get(trial, ""), self.width
                        )
                    )
                    before = key
            self.walked[trial] = len(path)
            self.seen[trial] = now
            if now != before:
                out.append(event_line(row, seconds, labels.get(trial, ""), self.width))
            new = [w for w in row.get("warnings") or [] if (trial, w) not in self.warned]
            self.warned.update((trial, w) for w in new)
            out += warning_lines([{"trial": trial, "warnings": new}], self.width)
        if not final and seconds - self.last_table >= self.every_s:
            self.last_table = seconds
            running = [r for r in rows if r.get("status") == "RUNNING"]
            out += header(rows, seconds, resources, self.width)
            if running:
                out += [
                    "  " + line
                    for line in table(
                        running,
                        width=self.width - 2,
                        max_rows=self.max_rows,
                        labels=[labels[str(r.get("trial"))] for r in running],
                    )
                ]
        return out


# --- a terminal: the table redrawn in place ------------------------------------------------------


def redraw(frame: Sequence[str], drawn: int) -> str:
    """The text that replaces the ``drawn`` lines last written (the cursor just below them) by ``frame``:
    up ``drawn`` lines, each line cleared as it is written, anything below cleared."""
    up = f"\x1b[{drawn}F" if drawn else ""
    return up + "".join(f"\x1b[2K{line}\n" for line in frame) + "\x1b[J"


def erase(drawn: int) -> str:
    """The text that removes the ``drawn`` lines last written (the cursor just below them)."""
    return f"\x1b[{drawn}F\x1b[J" if drawn else ""

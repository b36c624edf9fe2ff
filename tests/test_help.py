"""Help text a new user reads first: every `psreval <command> --help` names the command as it is typed
(`psreval run`, not `python -m psreval_tune run`), opens with a description that is not cut mid-sentence, and
every flag of `psreval run` says what it does (not only its default)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from psreval_tune import console

DANGLING = re.compile(r"\b(the|a|an|of|on|at|to|and|or|with|in|for|by|from)$", re.I)


def _help(argv: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # console sets argv[0] to the command's name
    with pytest.raises(SystemExit) as exc:
        console.main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def _description(text: str) -> str:
    """The paragraph after the usage block."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return " ".join(paragraphs[1].split())


@pytest.mark.parametrize("command", [*console.COMMANDS, "analysis report"])
def test_usage_names_the_command_and_the_description_is_whole(command, capsys, monkeypatch):
    text = _help(command.split(), capsys, monkeypatch)
    shown = "psreval report" if command == "analysis report" else f"psreval {command}"  # the same command
    assert text.startswith(f"usage: {shown} "), text.splitlines()[0]
    assert "python -m" not in text.splitlines()[0]
    description = _description(text)
    assert not description.startswith(("options:", "positional arguments:")), f"{command}: no description"
    assert not DANGLING.search(description.rstrip(".,;:")), f"{command}: description cut mid-sentence: {description!r}"


def test_every_run_flag_says_what_it_does(capsys, monkeypatch):
    text = _help(["run"], capsys, monkeypatch)
    options = text.split("options:", 1)[1]
    entries = [e.strip() for e in re.split(r"\n  (?=-)", "\n" + options) if e.strip().startswith("-")]
    bare = []
    for entry in entries:
        first, *rest = entry.split("\n")
        parts = re.split(r"\s{2,}", first.strip(), maxsplit=1)  # the flag and its metavar, then its help
        help_text = " ".join(" ".join([*parts[1:], *rest]).split())
        if not help_text or help_text.startswith("(default"):
            bare.append(parts[0])
    assert len(entries) > 40 and not bare, f"flags without help text: {bare}"
    for flag in ("--train-samples", "--test-samples"):
        entry = next(e for e in entries if e.startswith(flag))
        assert "subset" in entry and "--seed" in entry, entry


def test_the_module_form_prints_the_same_usage():
    proc = subprocess.run(
        [sys.executable, "-m", "psreval_tune", "run", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: psreval run ")


def test_only_the_psreval_process_itself_freezes_its_heap_for_exit(capsys, monkeypatch):
    """console.main(None) is the `psreval` process, which ends next: its objects are frozen so the exit's final
    collection skips them. A caller passing argv goes on living, and must keep a working garbage collector."""
    frozen = []
    monkeypatch.setattr(console.gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(sys, "argv", ["psreval", "--version"])
    assert console.main(["--version"]) == 0 and frozen == []
    assert console.main(None) == 0 and frozen == [True]
    assert capsys.readouterr().out.count("psreval ") == 2

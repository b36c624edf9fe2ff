"""Every command in the bash blocks of README.md and docs/*.md is real, and the README is a short front page.

- this project's commands (`psreval ...`, `python -m psreval_tune ...`, `python sweeps/X.py ...`,
  `python -m analysis ...`, also inside `ray job submit -- ...`): their flags parse with the real
  parsers (the work itself is not started: sweeps and training are what the other tests run);
  the short ones (`--help`) run as written, as subprocesses;
- `make TARGET`: the target exists (`make -n`); `make test` / `make demo` are what CI and a
  new user run;
- the cluster section's `ray` / `aws` / `ssh` commands need an AWS account: only the project
  commands they carry are checked;
- the README stays a front page (at most 250 lines) whose index links every page of docs/, and every
  relative link in README.md and docs/*.md points at a file that exists;
- the Python blocks of docs/*.md are ruff-formatted like the README's (`make lint` formats README.md;
  docs/ is outside ruff's file walk, so it is checked here, explicitly).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]


def _commands(pages: list[Path] = PAGES) -> list[str]:
    text = "\n".join(p.read_text() for p in pages)
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
                # this project's commands inside another one (`ray job submit -- '... && python ...'`)
                out += [m.strip() for m in re.findall(r"(?<=[&'] )(python3? (?:-m \S+|sweeps/\S+)[^'\"&;]*)", line)]
    return out


def _entry_argv(words: list[str]) -> list[str] | None:
    """The `psreval` argv of one of this project's commands, or None for anything else."""
    prog = Path(words[0]).name
    if prog == "psreval":
        return words[1:]
    if not prog.startswith("python"):
        return None
    rest = words[1:]
    if rest[:2] == ["-m", "psreval_tune"]:
        return rest[2:]
    if rest[:2] == ["-m", "analysis"]:
        return ["analysis", *rest[2:]]
    if rest and rest[0].startswith("sweeps/") and rest[0].endswith(".py"):
        name = Path(rest[0]).stem
        return [{"paper_grid": "grid", "recipe_check": "recipe-check"}.get(name, name), *rest[1:]]
    return None


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:  # the cluster section's multi-line JSON: its first word says what it is
        return command.split()


COMMANDS = _commands()
PROJECT = [(c, _entry_argv(_words(c))) for c in COMMANDS if _entry_argv(_words(c)) is not None]
MAKE = [c for c in COMMANDS if c.split()[0] == "make"]


def test_the_readme_has_the_commands_a_user_needs():
    front = _commands([README])
    front_argvs = [_entry_argv(_words(c)) for c in front]
    for command in ("run", "grid", "report", "reproduce"):  # the quick start, on the front page
        assert any(a and a[0] == command for a in front_argvs), command
    argvs = [a for _, a in PROJECT]  # the docs have the rest
    for command in ("run", "grid", "search", "report", "analysis", "reproduce", "recipe-check", "xseed"):
        assert any(a and a[0] == command for a in argvs), command
    assert {"make demo", "make test", "make test-fast", "make ui"} <= {c for c in front if c.startswith("make")}
    assert any("ray job submit" in c for c in COMMANDS) and any(c.startswith("python sweeps/") for c in COMMANDS)


def test_the_readme_is_a_front_page_with_an_index_of_the_docs():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", text))
    assert {f"docs/{p.name}" for p in DOCS} <= linked, "docs pages missing from the README's index"
    assert "arxiv.org/abs/" in text and "@inproceedings" in text  # the paper, and how to cite it


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.name}: broken link {target}"


def test_docs_python_blocks_are_formatted():
    ruff = Path(sys.executable).parent / "ruff"
    pages = [str(p) for p in DOCS if "```python" in p.read_text()]
    if not pages:
        return
    proc = subprocess.run([str(ruff), "format", "--check", *pages], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("command, argv", PROJECT, ids=[c[:60] for c, _ in PROJECT])
def test_project_command_flags_parse(command, argv, monkeypatch):
    """The command's own parser accepts it as written (nothing is started: parsing stops there)."""
    from psreval_tune import console

    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)  # a bad flag exits 2 here, failing the test
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        console.main([os.path.expanduser(a) for a in argv])
    except SystemExit as exc:  # --help prints and exits 0; a bad flag exits 2
        assert exc.code == 0, command
    except _Parsed:
        pass
    else:
        pytest.fail(f"{command}: nothing was parsed")


@pytest.mark.parametrize("command", [c for c, a in PROJECT if "--help" in a])
def test_short_commands_run_as_written(command):
    words = shlex.split(command)
    if words[0].startswith(".venv/bin/"):
        words[0] = str(Path(sys.executable).parent / Path(words[0]).name)
    proc = subprocess.run(words, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")


@pytest.mark.parametrize("command", sorted(set(MAKE)))
def test_make_targets_exist(command):
    proc = subprocess.run(["make", "-n", *command.split()[1:]], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr

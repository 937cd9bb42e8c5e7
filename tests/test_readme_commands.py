"""Every command README shows must work as written: each ``evalkit ...`` line names a real
subcommand and only flags that subcommand accepts; each ``make ...`` line names a real target;
README says how ``evalkit`` gets on PATH. Fails when a flag is renamed but the docs are not."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(prefix: str) -> list[str]:
    """Command lines inside fenced blocks; indented lines continue the previous command."""
    out: list[str] = []
    fenced = False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        body = line.split("#", 1)[0] if prefix == "make " else line
        if body.startswith(prefix):
            out.append(body)
        elif out and line.startswith(" ") and line.strip().startswith("[") and out[-1].startswith(prefix):
            out[-1] += " " + line.strip()
    return out


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_readme_evalkit_command_parses():
    from evalkit.cli import build_parser

    parser = build_parser()
    subs = _subparsers(parser)
    lines = _commands("evalkit ")
    assert len(lines) >= 10
    for line in lines:
        words = line.split()[1:]
        if words[0] == "--store":
            words = words[2:]
        assert words[0] in subs, f"README: unknown subcommand in: {line}"
        known = set(subs[words[0]]._option_string_actions) | set(parser._option_string_actions)
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
            assert flag in known, f"README: '{words[0]}' has no {flag}: {line}"


def test_every_readme_make_target_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    lines = _commands("make ")
    assert len(lines) >= 5
    for line in lines:
        assert line.split()[1] in targets, f"README: no make target for: {line}"


def test_readme_says_how_evalkit_gets_on_path():
    text = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in text

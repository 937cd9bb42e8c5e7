"""Engines and commands are found by name and imported only when used (evalkit.registry)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from evalkit.errors import EvalkitError
from evalkit.registry import COMMANDS, ENGINES, Registry


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout


def test_loading_and_freezing_a_suite_imports_no_engine() -> None:
    out = _fresh(
        "import sys, evalkit.suite.freeze, evalkit.suite.config as c\n"
        "from evalkit.registry import ENGINES\n"
        "print(sorted(ENGINES.names()))\n"
        "print([m for m in sys.modules if m.startswith('evalkit.engines')])\n"
    )
    names, engines_loaded = out.strip().splitlines()
    assert names == "['inspect', 'judge', 'lm-eval']"
    assert engines_loaded == "[]"


def test_an_engine_is_imported_on_first_get_and_cached() -> None:
    out = _fresh(
        "import sys\nfrom evalkit.registry import ENGINES\n"
        "e = ENGINES.get('judge')\n"
        "print(e.name, 'evalkit.engines.judge_engine' in sys.modules, ENGINES.get('judge') is e)\n"
    )
    assert out.strip() == "judge True True"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(EvalkitError, match=r"engine 'nope': unknown \(known: inspect, judge, lm-eval"):
        ENGINES.get("nope")


def test_a_broken_place_says_why_instead_of_unknown() -> None:
    reg: Registry[object] = Registry("engine", {"ghost": "evalkit.no_such_module:ENGINE", "bad": "evalkit.errors:Nope"})
    with pytest.raises(EvalkitError, match=r"engine 'ghost': cannot import evalkit.no_such_module:ENGINE \(ModuleNotFoundError"):
        reg.get("ghost")
    with pytest.raises(EvalkitError, match=r"engine 'bad': evalkit.errors:Nope does not exist"):
        reg.get("bad")


def test_the_type_check_refuses_a_wrong_object() -> None:
    with pytest.raises(EvalkitError, match="is not a engine|is not an engine"):
        ENGINES.register("fake", object())


def test_loop_comes_from_trainloop_through_the_entry_point() -> None:
    assert COMMANDS.place("loop") == "trainloop.cli:register"
    assert "loop" in COMMANDS.names()


def test_a_broken_command_plugin_leaves_the_others_working(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from evalkit import cli

    monkeypatch.setitem(COMMANDS._places, "broken", "evalkit.no_such_plugin:register")
    parser = cli.build_parser()  # builds, with the broken plugin present
    assert parser.parse_args(["runs"]).func.__name__ == "cmd_runs"
    args = parser.parse_args(["broken", "anything"])
    assert cli.main(["broken"]) == 2
    err = capsys.readouterr().err
    assert "command 'broken' could not be loaded: command 'broken': cannot import evalkit.no_such_plugin:register" in err
    assert isinstance(args, argparse.Namespace)

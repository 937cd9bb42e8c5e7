"""`evalkit loop`'s flags are generated from LoopConfig: every field has one, its help shows the
dataclass default, the YAML file is overridden only by flags that were given, comma lists split,
and a bad value is a clean error. Tested through a parser built with trainloop's own `register`
(nothing here goes through evalkit's command line)."""

from __future__ import annotations

import argparse
import io
from dataclasses import fields

import pytest

from evalkit.errors import EvalkitError
from evalkit.store.sqlite import RunStore
from tests.test_loop_steps import Fakes
from trainloop.cli import cli_fields, config_from_args, flag_name, register
from trainloop.config import LoopConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evalkit")
    p.add_argument("--store", default=None)
    sub = p.add_subparsers(dest="command", required=True)
    register(sub)
    return p


def _loop_parser() -> argparse.ArgumentParser:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["loop"]


def _help() -> str:
    return " ".join(_loop_parser().format_help().split())  # unwrapped: a default may sit across a line break


def _cfg(*argv: str) -> LoopConfig:
    return config_from_args(_parser().parse_args(["loop", *argv]))


def test_every_field_but_the_nested_configs_has_a_flag() -> None:
    names = {f.name for f in cli_fields()}
    assert names == {f.name for f in fields(LoopConfig)} - {"train", "gate"}
    flags = {flag_name(f) for f in cli_fields()}
    help_text = _help()
    for flag in flags | {"--config", "--plan", "--reports-dir", "--json"}:
        assert flag in help_text
    # the flag names `make loop` and the tests have always used
    assert {"--model", "--suite", "--target", "--rounds", "--method", "--strategy", "--pool", "--teacher", "--judge",
            "--data-dir", "--limit", "--seed", "--control", "--export-dir", "--allow-underpowered",
            "--skip-judge-check"} <= flags


def test_help_shows_the_dataclass_default(monkeypatch) -> None:
    helps = {a.dest: a.help for a in _loop_parser()._actions}
    for f in cli_fields():
        if f.name == "data_dir":
            want = "$EVALKIT_DATA_DIR, else unset"
        elif isinstance(f.default, bool):
            want = "on" if f.default else "off"
        elif isinstance(f.default, tuple):
            want = ",".join(f.default)  # a tuple is shown comma-separated
        else:
            want = "unset" if f.default is None else str(f.default)
        assert helps[f.name].endswith(f"(default: {want})"), f.name
    text = _help()
    assert "--model MODEL starting model (any MODEL form) (default: smollm2-135m)" in text
    assert "(default: ifeval)" in text and "(default: loop-demo)" in text
    monkeypatch.setattr(LoopConfig.__dataclass_fields__["rounds"], "default", 7)  # computed, never typed by hand
    assert {a.dest: a.help for a in _loop_parser()._actions}["rounds"].endswith("(default: 7)")


def test_no_flags_keep_the_dataclass_defaults(monkeypatch) -> None:
    monkeypatch.delenv("EVALKIT_DATA_DIR", raising=False)
    assert _cfg() == LoopConfig()


def test_yaml_then_flags(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("EVALKIT_DATA_DIR", raising=False)
    y = tmp_path / "loop.yaml"
    y.write_text("suite: from-yaml\nrounds: 5\nself_k: 6\nallow_underpowered: true\ntrain: {lora_r: 8}\n")
    cfg = _cfg("--config", str(y), "--rounds", "3", "--self-temperature", "0.5")
    assert cfg.suite == "from-yaml" and cfg.self_k == 6 and cfg.train.lora_r == 8  # YAML over defaults
    assert cfg.rounds == 3 and cfg.self_temperature == 0.5  # flags over YAML
    assert cfg.allow_underpowered is True  # a store_true flag not given does not reset the YAML
    assert cfg.model == LoopConfig().model
    assert _cfg("--config", str(y), "--plan", "--rounds", "4").rounds == 0  # --plan: round 0 and the plan only


def test_bool_flags(tmp_path) -> None:
    assert _cfg("--allow-underpowered", "--skip-judge-check").allow_underpowered is True
    assert _cfg("--no-repairable-only").repairable_only is False
    y = tmp_path / "loop.yaml"
    y.write_text("repairable_only: false\n")
    assert _cfg("--config", str(y)).repairable_only is False
    assert _cfg("--config", str(y), "--repairable-only").repairable_only is True


def test_comma_lists() -> None:
    cfg = _cfg("--target", "ifeval, mmlu", "--strategy", "self,pool", "--pool", "p.jsonl")
    assert cfg.targets == ("ifeval", "mmlu") and cfg.strategies == ("self", "pool")


def test_data_dir_default_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("EVALKIT_DATA_DIR", "/mirror")
    assert _cfg().data_dir == "/mirror"
    assert _cfg("--data-dir", "/other").data_dir == "/other"


def test_bad_values_are_clean_errors(capsys) -> None:
    for argv in (["--rounds", "two"], ["--control", "always"], ["--judge-margin", "x"], ["--no-such-flag"]):
        with pytest.raises(SystemExit) as exc:
            _cfg(*argv)
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err
    with pytest.raises(EvalkitError, match="METHOD must be"):
        _cfg("--method", "ppo")
    with pytest.raises(EvalkitError, match="unknown strategy 'magic'"):
        _cfg("--strategy", "self,magic")
    with pytest.raises(EvalkitError, match="ROUNDS must be"):
        _cfg("--rounds", "-1")


def test_loop_command_runs_end_to_end_through_the_parser(tmp_path, monkeypatch, capsys) -> None:
    """`loop` parsed by this parser runs the loop (heavy parts faked) and prints its summary lines."""
    from trainloop import loop as loop_mod

    fakes = Fakes()
    real_run = loop_mod.run
    monkeypatch.setattr(loop_mod, "run", lambda cfg, store, reports_dir: real_run(
        cfg, store, reports_dir, backends=fakes.backends(), out=io.StringIO()))
    store = str(tmp_path / "runs.sqlite")
    argv = ["--store", store, "loop", "--model", "base", "--suite", "fake", "--rounds", "1", "--self-prompts", "6",
            "--self-k", "2", "--data-per-cluster", "0", "--allow-underpowered", "--reports-dir", str(tmp_path / "r"),
            "--json"]
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("loop loop-") and "r1:promote" in out[0]
    assert out[1].startswith("loop report: ") and out[-1].startswith("{")
    assert RunStore(store, create=False).path == store


def test_device_and_dtype_are_flags_and_enter_the_loop_id_only_when_set() -> None:
    from trainloop.config import LoopConfig

    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    args = p.parse_args(["loop", "--device", "cpu", "--dtype", "float32"])
    assert (args.device, args.dtype) == ("cpu", "float32")
    base = LoopConfig()
    assert LoopConfig(device="auto", dtype="auto").identity() == base.identity()  # older loops keep their ids
    assert LoopConfig(device="cpu").identity() != base.identity()
    assert LoopConfig(dtype="float32").identity() != base.identity()

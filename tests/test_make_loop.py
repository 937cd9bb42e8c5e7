"""`make loop` passes a setting to the CLI only when the user gave it, so a LOOP_CONFIG file can set
the suite, method, rounds or model (a Makefile default used to override the file's suite)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _dry_run(*args: str) -> str:
    # -n prints the recipe; -o keeps the setup stamp from being (re)built
    out = subprocess.run(["make", "-n", "-o", ".venv/.evalkit-setup", "loop", *args], cwd=ROOT,
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    return " ".join(line for line in out.stdout.splitlines() if "evalkit" in line and " loop" in line or "--" in line)


def test_config_file_settings_are_not_overridden() -> None:
    cmd = _dry_run("LOOP_CONFIG=trainloop/configs/fp32.yaml")
    assert '--config "trainloop/configs/fp32.yaml"' in cmd
    for flag in ("--suite", "--method", "--rounds", "--target", "--model", "--judge"):
        assert flag not in cmd


def test_given_settings_are_passed() -> None:
    cmd = _dry_run("SUITE=loop-demo-fp32", "METHOD=sft", "ROUNDS=3", "TARGET=ifeval", "MODEL=m", "JUDGE=j")
    for flag in ('--suite "loop-demo-fp32"', '--method "sft"', '--rounds "3"', '--target "ifeval"', '--model "m"',
                 '--judge "j"'):
        assert flag in cmd


def test_plan_control_and_export_are_passed() -> None:
    cmd = _dry_run("LOOP_CONFIG=trainloop/configs/demo-cpu.yaml", "PLAN=1", "CONTROL=random", "EXPORT_DIR=out/m",
                   "ALLOW_UNDERPOWERED=1")
    for flag in ("--plan", '--control "random"', '--export-dir "out/m"', "--allow-underpowered"):
        assert flag in cmd
    assert "--plan" not in _dry_run("LOOP_CONFIG=trainloop/configs/demo-cpu.yaml")

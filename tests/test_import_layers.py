"""The import layers in pyproject.toml ([tool.importlinter]) hold: data flows one way through
evalkit, evalkit never imports trainloop, and trainloop reaches the runner only through evalkit.api.

Runs the real ``lint-imports`` over the real packages; a second test shows the same tool fails
on a small package that breaks a layer, so the first cannot pass vacuously.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (make setup installs it)")


def _lint(cwd: Path, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(LINT), "--no-cache"] + (["--config", str(config)] if config else [])
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_evalkit_and_trainloop_keep_their_import_contracts() -> None:
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout and "KEPT" in res.stdout


def test_the_linter_catches_a_lower_layer_importing_a_higher_one(tmp_path: Path) -> None:
    pkg = tmp_path / "toy"
    (pkg / "suite").mkdir(parents=True)
    (pkg / "engines").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "engines" / "__init__.py").write_text("from toy import suite\n")
    (pkg / "suite" / "__init__.py").write_text("from toy import engines  # data importing code: the old circle\n")
    cfg = tmp_path / "contracts.toml"
    cfg.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "toy"

        [[tool.importlinter.contracts]]
        name = "suite below engines"
        type = "layers"
        layers = ["toy.engines", "toy.suite"]
    """))
    res = _lint(tmp_path, cfg)
    assert res.returncode != 0
    assert "toy.suite -> toy.engines" in res.stdout

"""Shared fixtures. Tests use small data written for this project (tests/fixtures/data) in
the public datasets' schemas; tests that can also use ../shared/data skip cleanly without it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
DATA = FIXTURES / "data"
SHARED_DATA = (HERE.parent.parent / "shared" / "data").resolve()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A private, writable copy of the fixture mirror (tests may corrupt it)."""
    dest = tmp_path / "data"
    shutil.copytree(DATA, dest)
    return dest


@pytest.fixture
def tiny_suite() -> Path:
    return FIXTURES / "suites" / "tiny.yaml"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA

"""The loop report in headless Chromium: loads from disk, one row per round, decisions and
reasons visible, model-written text stays inert."""

from __future__ import annotations

import io
import re

import pytest

from evalkit.store.sqlite import RunStore
from tests.test_loop_steps import Fakes, FakeLM, _cfg
from tests.test_report_browser import CHROMIUM, chromium, uncaught
from trainloop.loop import run
from trainloop.record import store as ls

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")]


class EvilLM(FakeLM):
    def generate_until(self, reqs, disable_tqdm=False):
        return ["<script>document.title='pwned'</script> ok." for _ in reqs]


def test_loop_report_in_chromium(tmp_path) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"))
    f = Fakes()
    b = f.backends()
    b.lm = lambda cfg, model: EvilLM()
    cfg = _cfg(rounds=2)
    _, report = run(cfg, store, reports_dir=str(tmp_path / "reports"), backends=b, out=io.StringIO())
    assert ls.get_examples(store, cfg.identity(), 1)
    res = chromium(tmp_path / "profile", "--dump-dom", f"file://{report}")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert not uncaught(res.stderr)
    assert len(re.findall(r'<tr class="round"', dom)) == 3
    assert "promoted" in dom and "rolled back" in dom and "does not clear the minimum gain" in dom
    assert re.search(r'id="loop-status">done<', dom)
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom).group(1)
    assert "<script>document.title" not in dom  # escaped wherever model text is shown


def test_loop_report_with_plan_fit_and_control_in_chromium(tmp_path) -> None:
    from tests.test_loop_confirm import ConfirmFakes, _cfg as confirm_cfg

    store = RunStore(str(tmp_path / "runs.sqlite"))
    cfg = confirm_cfg()
    _, report = run(cfg, store, reports_dir=str(tmp_path / "reports"), backends=ConfirmFakes().backends(), out=io.StringIO())
    res = chromium(tmp_path / "profile", "--dump-dom", f"file://{report}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert not uncaught(res.stderr)
    dom = res.stdout
    assert 'id="plan"' in dom and "Selection / confirmation split" in dom
    assert len(re.findall(r'<table class="control">', dom)) == 1 and "targeted − random control" in dom
    assert "learned its data" in dom and "Data budget" in dom

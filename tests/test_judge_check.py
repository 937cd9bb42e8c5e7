"""The judge strategy's gate on a judge: agreement with human labels (Wilson CI must clear 50%) and
position consistency (must reach the floor), run once and reused from the store. Scripted judges
only; no model is loaded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.judge.agreement import run_agreement
from evalkit.judge.stats import wilson_ci
from evalkit.judge.verdict import SingleJudgment
from evalkit.store.sqlite import RunStore
from trainloop.gate.judge_check import DEFAULT_DATA, JudgeCheckConfig, check_judge, require_judge


class FakeJudge:
    """Prefers the answers in ``good`` (consistently, in both orders); ``first_p`` (when set) ignores
    the content and gives the answer shown first that probability."""

    scoring = "fake-v1"

    def __init__(self, good: set[str], *, first_p: float | None = None, tag: str = "f") -> None:
        self.good, self.first_p = good, first_p
        self.name = f"fake-{tag}"
        self.identity = f"fake:{tag}"
        self.calls = 0
        self.requests = 0

    def _q(self, text: str) -> float:
        return 1.0 if text in self.good else 0.0

    def judge(self, requests):
        self.calls += 1
        self.requests += len(requests)
        out = []
        for r in requests:
            p = self.first_p if self.first_p is not None else 1 / (1 + math.exp(-3 * (self._q(r.first) - self._q(r.second))))
            out.append(SingleJudgment(verdict="A" if p >= 0.5 else "B", probs={"A": p, "B": 1 - p}))
        return out


def write_pairs(path: Path, n: int) -> tuple[list[str], list[str]]:
    """``n`` generic pairs, human label alternating a/b; returns (preferred texts, rejected texts)."""
    good, bad = [], []
    with path.open("w") as f:
        for i in range(n):
            win, lose = f"good answer {i}", f"bad answer {i}"
            label = "a" if i % 3 else "b"
            a, b = (win, lose) if label == "a" else (lose, win)
            f.write(json.dumps({"instruction": f"question {i}", "response_a": a, "response_b": b, "label": label}) + "\n")
            good.append(win)
            bad.append(lose)
    return good, bad


@pytest.fixture
def setup(tmp_path: Path):
    good, bad = write_pairs(tmp_path / "prefs.jsonl", 60)
    store = RunStore(str(tmp_path / "s.sqlite"))
    cfg = JudgeCheckConfig(data="prefs.jsonl", data_dir=str(tmp_path), limit=60)
    yield store, cfg, good, bad
    store.close()


def _runs(store: RunStore) -> int:
    with store.transaction() as db:
        return int(db.execute("SELECT COUNT(*) FROM judge_runs").fetchone()[0])


def test_position_biased_judge_is_refused_in_one_line(setup) -> None:
    store, cfg, good, _ = setup
    judge = FakeJudge(set(good), first_p=0.9, tag="first")
    with pytest.raises(EvalkitError) as e:
        require_judge(judge, store, cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("loop: judge 'fake-first' failed its agreement check on 60 human-labelled")
    assert "agreement 0.50, 95% CI [0.38, 0.62] includes 50%" in msg
    assert "position consistency 0.00 < floor 0.50" in msg and "shown first in 100%" in msg
    assert msg.endswith("choose a stronger JUDGE= or pass --skip-judge-check")
    check = check_judge(judge, store, cfg)
    assert not check.passed and check.position_consistency == 0.0 and check.tie_rate == 1.0
    assert check.first_position_rate == 1.0


def test_good_judge_passes(setup) -> None:
    store, cfg, good, bad = setup
    # 10% of the pairs (the first 6) judged against the humans, consistently in both orders
    judge = FakeJudge(set(good[6:]) | set(bad[:6]), tag="good")
    check = require_judge(judge, store, cfg)
    assert check.passed and check.n == 60
    assert check.agreement == pytest.approx(0.9) and check.ci_lo > 0.75 and check.ci_hi < 1.0
    assert check.position_consistency == 1.0 and check.tie_rate == 0.0
    assert "passed" in check.reason and "\n" not in check.reason


def test_chance_level_judge_is_refused_for_agreement_alone(tmp_path: Path) -> None:
    good, bad = write_pairs(tmp_path / "prefs.jsonl", 30)
    judge = FakeJudge(set(good[:18]) | set(bad[18:]), tag="coin")  # 60% on 30 pairs: CI includes 50%
    check = check_judge(judge, RunStore(str(tmp_path / "s.sqlite")), JudgeCheckConfig(data=str(tmp_path / "prefs.jsonl")))
    assert not check.passed and check.position_consistency == 1.0
    assert "includes 50%" in check.reason and "better than chance" in check.reason and "floor" not in check.reason


def test_second_check_reuses_the_stored_run(setup) -> None:
    store, cfg, good, _ = setup
    judge = FakeJudge(set(good), tag="reuse")
    first = check_judge(judge, store, cfg)
    calls, runs = judge.calls, _runs(store)
    assert calls > 0 and not first.reused and judge.requests == 120  # both orders, no injection probe
    again = check_judge(judge, store, cfg)
    assert judge.calls == calls and _runs(store) == runs and again.reused and again.run_id == first.run_id
    assert again.to_dict() == {**first.to_dict(), "reused": True}
    fresh = FakeJudge(set(good), tag="reuse")  # same identity, new object (a new loop round)
    assert check_judge(fresh, store, cfg).passed and fresh.calls == 0


def test_reuses_a_make_judge_agreement_run(setup) -> None:
    store, cfg, good, _ = setup
    judge = FakeJudge(set(good), tag="make")
    run_agreement(judge, str(Path(cfg.data_dir) / cfg.data), None, store)  # defaults, as the CLI runs it
    calls = judge.calls
    check = check_judge(judge, store, JudgeCheckConfig(data=cfg.data, data_dir=cfg.data_dir, limit=40))
    assert check.reused and check.n == 40 and judge.calls == calls and check.passed


def test_other_judge_or_data_is_not_reused(setup, tmp_path: Path) -> None:
    store, cfg, good, _ = setup
    check_judge(FakeJudge(set(good), tag="one"), store, cfg)
    other = FakeJudge(set(good), tag="two")
    assert not check_judge(other, store, cfg).reused and other.calls > 0
    more = JudgeCheckConfig(data=cfg.data, data_dir=cfg.data_dir, limit=None)
    (Path(cfg.data_dir) / "prefs.jsonl").open("a").write(json.dumps(
        {"instruction": "q", "response_a": "x", "response_b": "y", "label": "a"}) + "\n")
    assert not check_judge(other, store, more).reused


def test_missing_data_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("EVALKIT_DATA_DIR", raising=False)
    store = RunStore(str(tmp_path / "s.sqlite"))
    with pytest.raises(EvalkitError, match="DATA_DIR") as e:
        check_judge(FakeJudge(set()), store, JudgeCheckConfig())
    assert "\n" not in str(e.value)
    with pytest.raises(EvalkitError, match="not a file"):
        check_judge(FakeJudge(set()), store, JudgeCheckConfig(data_dir=str(tmp_path)))


def test_wilson_ci() -> None:
    assert wilson_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(x) for x in wilson_ci(0, 0))


def test_default_data_in_the_shared_mirror(shared_data: Path, tmp_path: Path) -> None:
    """The default check file (what `make judge-agreement` uses) resolves under the mirror; a judge
    that reads only the position is refused on it, as the embedded 135M judge is."""
    assert (shared_data / DEFAULT_DATA).is_file()
    store = RunStore(str(tmp_path / "s.sqlite"))
    check = check_judge(FakeJudge(set(), first_p=0.8, tag="pos"), store, JudgeCheckConfig(data_dir=str(shared_data)))
    assert check.n == 100 and not check.passed and check.position_consistency == 0.0

"""The loop driver: stored steps are skipped, failures are recorded, kill -9 resumes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest

from evalkit.errors import EvalkitError
from evalkit.store.sqlite import RunStore
from trainloop.record import store as ls
from trainloop.record.driver import Step, StopLoop, run_loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _steps(calls: list[str], fail: str | None = None):
    def make(name):
        def run(ctx):
            calls.append(f"{ctx.round}:{name}")
            if name == fail:
                raise ValueError("boom")
            prev = ctx.maybe_result("a") or {}
            return {"value": prev.get("value", 0) + 1}
        return Step(name, run)

    def skip_b(ctx):
        return "nothing to train in round 0" if ctx.round == 0 else None

    return lambda rnd: [make("a"), Step("b", make("b").run, skip=skip_b)]


def test_runs_rounds_and_reuses_stored_steps(tmp_path) -> None:
    store = RunStore(str(tmp_path / "s.db"))
    calls: list[str] = []
    out = run_loop(store, "L1", {"x": 1}, 1, _steps(calls), out=io.StringIO())
    assert calls == ["0:a", "1:a", "1:b"] and not out.resumed
    assert ls.step_result(store, "L1", 0, "b") == {"skipped": "nothing to train in round 0"}
    assert ls.step_result(store, "L1", 1, "b")["value"] == 2  # read a's stored result
    calls.clear()
    again = run_loop(store, "L1", {"x": 1}, 2, _steps(calls), out=io.StringIO())
    assert again.resumed and calls == ["2:a", "2:b"]
    assert len(again.reused) == 4
    assert ls.get_loop(store, "L1")["status"] == "done"


def test_failure_is_stored_and_the_step_reruns(tmp_path) -> None:
    store = RunStore(str(tmp_path / "s.db"))
    calls: list[str] = []
    with pytest.raises(EvalkitError, match="round 1 step 'b' failed: ValueError: boom"):
        run_loop(store, "L2", {}, 1, _steps(calls, fail="b"), out=io.StringIO())
    rows = {(r["round"], r["step"]): r for r in ls.steps(store, "L2")}
    assert rows[(1, "b")]["status"] == "failed" and "ValueError" in rows[(1, "b")]["error"]
    assert ls.get_loop(store, "L2")["status"] == "failed"
    calls.clear()
    run_loop(store, "L2", {}, 1, _steps(calls), out=io.StringIO())
    assert calls == ["1:b"]
    assert {(r["round"], r["step"]): r["attempts"] for r in ls.steps(store, "L2")}[(1, "b")] == 2


def test_stop_marks_the_loop_stopped(tmp_path) -> None:
    store = RunStore(str(tmp_path / "s.db"))

    def stop(ctx):
        raise StopLoop("suite changed")

    with pytest.raises(StopLoop):
        run_loop(store, "L3", {}, 0, lambda r: [Step("check", stop)], out=io.StringIO())
    assert ls.get_loop(store, "L3")["status"] == "stopped"


def test_examples_replace_per_round(tmp_path) -> None:
    store = RunStore(str(tmp_path / "s.db"))
    ls.ensure_tables(store)
    ls.put_examples(store, "L", 1, [("sft", {"m": 1}, {"strategy": "pool"}), ("dpo", {"m": 2}, {"strategy": "self"})])
    ls.put_examples(store, "L", 1, [("sft", {"m": 3}, {"strategy": "pool", "x": float("nan")})])
    assert ls.get_examples(store, "L", 1) == [{"kind": "sft", "data": {"m": 3}, "provenance": {"strategy": "pool", "x": None}}]


SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from evalkit.store.sqlite import RunStore
    from trainloop.record.driver import Step, run_loop
    marker, db, log = sys.argv[1], sys.argv[2], sys.argv[3]

    def step(name):
        def run(ctx):
            with open(log, "a") as fh:
                fh.write(f"{{ctx.round}}:{{name}}\\n")
            if name == "train" and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)  # dies mid-step, nothing stored
            return {{"ok": name}}
        return Step(name, run)

    run_loop(RunStore(db), "K", {{}}, 1, lambda r: [step("eval"), step("train"), step("gate")])
""")


def test_resume_after_kill_minus_9(tmp_path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(SCRIPT.format(repo=REPO))
    args = [sys.executable, str(script), str(tmp_path / "killed"), str(tmp_path / "s.db"), str(tmp_path / "log")]
    first = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert first.returncode == -9
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    log = (tmp_path / "log").read_text().split()
    # round 0 eval, train (killed); resumed: round 0 train again, gate, then round 1
    assert log == ["0:eval", "0:train", "0:train", "0:gate", "1:eval", "1:train", "1:gate"]
    assert "0/1] eval: done earlier (stored)" in second.stderr
    store = RunStore(str(tmp_path / "s.db"))
    assert {(r["round"], r["step"]): r["attempts"] for r in ls.steps(store, "K")}[(0, "train")] == 2

"""End to end with the real embedded model on the tiny fixture suite (slow: loads SmolLM2).

The resume test kills a real `evalkit eval` process with SIGKILL mid-way, restarts it, and
checks that finished work is not recomputed and the metrics equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

CHUNK_ENV = {"EVALKIT_REQUEST_CHUNK": "4"}


def _evalkit(args, env_extra=None, **kw):
    env = {**os.environ, **CHUNK_ENV, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "evalkit", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _eval_args(store, suite, data, reports):
    return ["--store", store, "eval", "--suite", str(suite), "--data-dir", str(data), "--reports-dir", str(reports), "--no-progress", "--json"]


def _finish(proc, timeout=900):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def _cached(store) -> int:
    try:
        db = sqlite3.connect(store, timeout=1)
        return db.execute("SELECT COUNT(*) FROM request_cache").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from tests.conftest import DATA, FIXTURES

    tmp = tmp_path_factory.mktemp("e2e")
    store = str(tmp / "ref.sqlite")
    result, err = _finish(_evalkit(_eval_args(store, FIXTURES / "suites" / "tiny.yaml", DATA, tmp / "reports")))
    return {"store": store, "result": result, "stderr": err, "tmp": tmp}


def test_eval_stores_every_sample_and_prints_contract(uninterrupted):
    res = uninterrupted["result"]
    assert set(res) == {"run_id", "suite_hash", "metrics"}
    m = res["metrics"]
    assert set(m["mmlu"]) == {"acc", "ece", "brier"}
    assert set(m["gsm8k"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert set(m["ifeval"]) == {"prompt_level_strict_acc", "prompt_level_loose_acc", "inst_level_strict_acc", "inst_level_loose_acc"}
    assert 0.0 <= m["mmlu"]["acc"] <= 1.0 and 0.0 <= m["mmlu"]["brier"] <= 2.0
    db = sqlite3.connect(uninterrupted["store"])
    counts = dict(db.execute("SELECT entry, COUNT(*) FROM samples GROUP BY entry").fetchall())
    assert counts == {"mmlu": 6, "gsm8k": 3, "ifeval": 3}  # 2 subjects x 3, 3, 3
    status, attempts = db.execute("SELECT status, attempts FROM runs").fetchone()
    assert (status, attempts) == ("complete", 1)
    ll = json.loads(db.execute("SELECT loglik_json FROM samples WHERE entry='mmlu' LIMIT 1").fetchone()[0])
    assert len(ll) == 4 and all(x < 0 for x in ll)
    resp = json.loads(db.execute("SELECT responses_json FROM samples WHERE entry='ifeval' LIMIT 1").fetchone()[0])
    assert isinstance(resp[0], str) and resp[0]
    assert "10/57" not in uninterrupted["stderr"] and "2/57 MMLU subjects" in uninterrupted["stderr"]
    html = uninterrupted["tmp"] / "reports" / res["run_id"] / "index.html"
    assert html.is_file() and "prompt_level_strict_acc" in html.read_text()


def test_kill_9_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
    from tests.conftest import DATA, FIXTURES

    store = str(tmp_path / "resume.sqlite")
    args = _eval_args(store, FIXTURES / "suites" / "tiny.yaml", DATA, tmp_path / "reports")
    proc = _evalkit(args)
    deadline = time.time() + 600
    while _cached(store) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(store)
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "running"  # never marked complete
    cached_before = db.execute("SELECT COUNT(*) FROM request_cache").fetchone()[0]
    assert cached_before >= 8
    result, _ = _finish(_evalkit(args))
    ref = uninterrupted["result"]
    assert result["suite_hash"] == ref["suite_hash"]
    assert result["metrics"] == ref["metrics"]
    run_id, status, attempts = db.execute("SELECT run_id, status, attempts FROM runs").fetchone()
    assert (run_id, status, attempts) == (result["run_id"], "complete", 2)
    reused = sum(json.loads(x)["reused_requests"] for (x,) in db.execute("SELECT extra_json FROM entries"))
    assert reused >= cached_before  # nothing finished was recomputed
    ours = db.execute("SELECT task, doc_id, metrics_json, responses_json, loglik_json FROM samples ORDER BY 1, 2").fetchall()
    ref_db = sqlite3.connect(uninterrupted["store"])
    theirs = ref_db.execute("SELECT task, doc_id, metrics_json, responses_json, loglik_json FROM samples ORDER BY 1, 2").fetchall()
    assert ours == theirs


def test_runs_show_export(uninterrupted, tmp_path):
    store = uninterrupted["store"]
    out = subprocess.run([sys.executable, "-m", "evalkit", "--store", store, "runs", "--json"], capture_output=True, text=True, check=True)
    runs = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs[0]["status"] == "complete"
    out = subprocess.run([sys.executable, "-m", "evalkit", "--store", store, "show", "latest"], capture_output=True, text=True, check=True)
    assert "mmlu_astronomy" in out.stdout
    import pandas as pd

    for fmt in ("parquet", "csv"):
        dest = tmp_path / f"s.{fmt}"
        subprocess.run([sys.executable, "-m", "evalkit", "--store", store, "export", "latest", "--format", fmt, "--out", str(dest)], check=True, capture_output=True)
        df = pd.read_parquet(dest) if fmt == "parquet" else pd.read_csv(dest)
        assert len(df) == 12 and {"task", "doc_id", "metrics"} <= set(df.columns)


def test_compare_run_with_itself_via_cli(uninterrupted, tmp_path):
    store = uninterrupted["store"]
    run_id = uninterrupted["result"]["run_id"]
    out = subprocess.run(
        [sys.executable, "-m", "evalkit", "--store", store, "compare", "--a", run_id, "--b", run_id, "--target", "ifeval",
         "--reports-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    rows = res["comparison"]["rows"]
    assert rows and all(r["delta"] == 0 and not r["significant"] for r in rows)
    assert {e["entry"] for e in res["tax"]["per_entry"]} == {"mmlu", "gsm8k"}
    assert (tmp_path / f"compare-{res['id']}" / "index.html").is_file()


def test_kl_of_model_to_itself_via_cli(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Name a colour."}\n{"prompt": "Count to three."}\n')
    out = subprocess.run(
        [sys.executable, "-m", "evalkit", "--store", str(tmp_path / "s.sqlite"), "kl", "--model", "smollm2-135m",
         "--ref", "smollm2-135m", "--prompts", str(prompts), "--max-new-tokens", "8", "--reports-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["method"] == "identical" and abs(res["mean_kl"]) < 1e-6 and res["n_prompts"] == 2


def _copy_store(src, dst) -> str:
    """A private copy (sqlite backup), so tests that change runs never touch the shared reference."""
    out = sqlite3.connect(dst)
    sqlite3.connect(src).backup(out)
    out.close()
    return str(dst)


def test_rerun_reuses_the_complete_run_unless_forced(uninterrupted, tmp_path):
    from tests.conftest import DATA, FIXTURES

    store = _copy_store(uninterrupted["store"], tmp_path / "rerun.sqlite")
    args = _eval_args(store, FIXTURES / "suites" / "tiny.yaml", DATA, tmp_path / "reports")
    result, err = _finish(_evalkit(args))
    ref = uninterrupted["result"]
    assert result["run_id"] == ref["run_id"] and result["metrics"] == ref["metrics"]
    assert f"reusing complete run {ref['run_id']}" in err
    db = sqlite3.connect(store)
    assert db.execute("SELECT COUNT(*), MAX(attempts) FROM runs").fetchone() == (1, 1)  # nothing re-run


def test_resume_with_a_different_dtype_starts_a_new_run_and_says_why(uninterrupted, tmp_path):
    """An unfinished bf16/fp32 run must not be completed by a run in the other dtype."""
    from tests.conftest import DATA, FIXTURES

    store = _copy_store(uninterrupted["store"], tmp_path / "ident.sqlite")
    db = sqlite3.connect(store)
    old_id, settings = db.execute("SELECT run_id, settings_json FROM runs").fetchone()
    old_dtype = json.loads(settings)["identity"]["dtype"]
    other = "float32" if old_dtype == "bfloat16" else "bfloat16"
    with db:
        db.execute("UPDATE runs SET status='failed'")  # an interrupted attempt, as far as resume can tell
    args = _eval_args(store, FIXTURES / "suites" / "tiny.yaml", DATA, tmp_path / "reports") + ["--dtype", other]
    proc = _evalkit(args)
    note, deadline = "", time.time() + 300
    while time.time() < deadline:  # the note comes before any model work; stop the run once it is out
        line = proc.stderr.readline()
        if not line:
            break
        if "not resuming run" in line:
            note = line
            break
    deadline = time.time() + 120  # the new run row follows the note; stop once it exists
    while proc.poll() is None and time.time() < deadline and db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] < 2:
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    assert f"not resuming run {old_id} (failed): it differs in dtype: {old_dtype} -> {other}" in note, note
    runs = db.execute("SELECT run_id, status FROM runs ORDER BY created_at").fetchall()
    assert len(runs) == 2 and runs[0] == (old_id, "failed") and runs[1][0] != old_id

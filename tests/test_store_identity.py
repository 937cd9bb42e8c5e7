"""Issue #21 items 2 and 5: run identity, reuse, missing stores, failed runs, offline hub ids.

No model is loaded here; the real-model rerun/resume checks live in tests/test_e2e_eval.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from evalkit import cli
from evalkit.errors import EvalkitError
from evalkit.models.spec import parse_model
from evalkit.runner import identity_diff, identity_hash, run_identity
from evalkit.store import RunStore


def _fields(model: str, **over):
    base = dict(device="cpu", dtype="bfloat16", batch_size=8, lm_backend="fast", suite_hash="abc", part="all")
    base.update(over)
    return run_identity(parse_model(model), "sha256:same", **base)


def test_identity_separates_forms_backends_devices_and_dtypes(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    plain = _fields(str(folder))
    variants = [_fields(f"vllm:{folder}", device="cuda"), _fields(str(folder), device="cuda"),
                _fields(str(folder), dtype="float32"), _fields(str(folder), lm_backend="hf"),
                _fields(str(folder), batch_size=1), _fields(str(folder), part="confirm"),
                _fields(str(folder), suite_hash="other")]
    hashes = {identity_hash(plain)} | {identity_hash(v) for v in variants}
    assert len(hashes) == len(variants) + 1  # every one of them is a different run
    assert identity_hash(_fields(str(folder))) == identity_hash(plain)  # and the same is the same
    assert _fields(f"vllm:{folder}", device="cuda")["backend"] == "vllm"
    oa = _fields("openai:http://127.0.0.1:8000/v1#m", device="remote", dtype="remote")
    ob = _fields("openai:http://127.0.0.1:9000/v1#m", device="remote", dtype="remote")
    assert oa["backend"] == "local-completions" and identity_hash(oa) != identity_hash(ob)


def test_identity_diff_names_each_changed_field():
    old = _fields("smollm2-135m")
    new = _fields("smollm2-135m", dtype="float32", device="cuda")
    assert identity_diff(old, new) == ["device: cpu -> cuda", "dtype: bfloat16 -> float32"]
    assert identity_diff({}, new)[0].startswith("weights: ? -> ")  # a run from before identities were stored


def _run(store: RunStore, status: str, created: float, spec: str = "m") -> str:
    rid = store.create_run(identity="i-" + status, model_spec=spec, model_hash="h", suite_name="s", suite_hash="x",
                           suite={}, settings={}, versions={})
    store._db.execute("UPDATE runs SET status=?, created_at=? WHERE run_id=?", (status, created, rid))
    return rid


def test_failed_runs_are_hidden_and_latest_is_the_newest_complete_run(tmp_path, capsys):
    path = str(tmp_path / "s.sqlite")
    store = RunStore(path)
    done = _run(store, "complete", 1.0)
    failed = _run(store, "failed", 2.0)
    assert store.get_run("latest").run_id == done
    assert cli.main(["--store", path, "runs"]) == 0
    out = capsys.readouterr().out
    assert done in out and failed not in out and "1 failed run hidden: evalkit runs --all" in out
    assert cli.main(["--store", path, "runs", "--all"]) == 0
    assert failed in capsys.readouterr().out


def test_latest_without_a_complete_run_says_so(tmp_path):
    store = RunStore(str(tmp_path / "s.sqlite"))
    _run(store, "failed", 1.0)
    with pytest.raises(EvalkitError, match="no complete run .*1 unfinished or failed"):
        store.get_run("latest")


@pytest.mark.parametrize("command", [["runs"], ["show", "latest"], ["export", "latest"], ["report", "--run", "latest"],
                                     ["compare", "--a", "x", "--b", "y"], ["clusters", "--run", "latest"]])
def test_reading_commands_refuse_a_missing_store(tmp_path, command):
    missing = tmp_path / "typo.sqlite"
    out = subprocess.run([sys.executable, "-m", "evalkit", "--store", str(missing), *command],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such file" in lines[0] and str(missing) in lines[0]
    assert not missing.exists()  # nothing created


def test_offline_hub_id_fails_fast_with_the_reason(tmp_path, monkeypatch):
    from evalkit.models.loader import resolve_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    t0 = time.perf_counter()
    with pytest.raises(EvalkitError, match="not in the local Hugging Face cache .*HF_HUB_OFFLINE is set"):
        resolve_hub(parse_model("someorg/not-cached-model"))
    assert time.perf_counter() - t0 < 5.0


def test_offline_hub_id_via_cli_is_one_line_and_creates_no_run(tmp_path):
    store = tmp_path / "s.sqlite"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    out = subprocess.run([sys.executable, "-m", "evalkit", "--store", str(store), "eval", "--model", "someorg/not-cached",
                          "--suite", "core", "--limit", "1"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "HF_HUB_OFFLINE is set" in out.stderr
    assert RunStore(str(store)).list_runs() == []

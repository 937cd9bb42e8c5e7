from __future__ import annotations

import pytest

from evalkit.errors import EvalkitError
from evalkit.store import RunStore


def _run(store: RunStore, identity: str = "id") -> str:
    return store.create_run(
        identity=identity, model_spec="m", model_hash="h", suite_name="s", suite_hash="sh", suite={}, settings={}, versions={}
    )


def test_run_lifecycle_and_resume_lookup(tmp_path):
    store = RunStore(str(tmp_path / "s.sqlite"))
    rid = _run(store)
    assert store.find_resumable("id") == rid
    store.start_entry(rid, "e1", {})
    with pytest.raises(RuntimeError, match="not complete"):
        store.finish_run(rid, {})
    store.cache_put(rid, {"e1|k1": [1.5, True], "e1|k2": "text"})
    assert store.cache_get(rid, ["e1|k1", "e1|k2", "e1|k3"]) == {"e1|k1": [1.5, True], "e1|k2": "text"}
    store.complete_entry(
        rid, "e1",
        [{"task": "t", "doc_id": 0, "prompt": "p", "target": 1, "metrics": {"acc": 1.0}, "loglikelihoods": [-1.0, -2.0]}],
        [{"task": "e1", "metric": "acc", "value": 1.0, "stderr": None, "n": 1}],
    )
    assert store.cached_count(rid) == 0  # cache of a finished entry is dropped
    store.finish_run(rid, {"total_s": 1})
    assert store.get_run("latest").status == "complete"
    assert store.find_resumable("id") is None
    [s] = store.samples(rid)
    assert s["loglik"] == [-1.0, -2.0] and s["metrics"] == {"acc": 1.0} and s["target"] == "1"


def test_failed_run_is_resumable_and_counts_attempts(tmp_path):
    store = RunStore(str(tmp_path / "s.sqlite"))
    rid = _run(store)
    store.fail_run(rid, "KeyboardInterrupt")
    assert store.get_run(rid).status == "failed"
    assert store.find_resumable("id") == rid
    store.reopen_run(rid)
    assert store.get_run(rid).attempts == 2


def test_unknown_run_and_unwritable_path(tmp_path):
    store = RunStore(str(tmp_path / "s.sqlite"))
    with pytest.raises(EvalkitError, match="not found"):
        store.get_run("nope")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EvalkitError, match="cannot open for writing"):
        RunStore(str(blocker / "store.sqlite"))

"""Run names and tags: stored with a run (not its identity), migrated into old store files,
filtered by ``RunStore.list_runs`` / ``evalkit runs``, attached to reused runs, and loaded into
pandas with ``api.load_run``. No model is loaded: runs are created directly in a real SQLite store."""

from __future__ import annotations

import json
import sqlite3

import pytest

from evalkit import api, cli
from evalkit.errors import EvalkitError
from evalkit.runner import EvalSettings, _labels_note
from evalkit.store import RunStore

# the runs table as it was before names and tags (copied from evalkit/store/sqlite.py)
OLD_RUNS = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    status TEXT NOT NULL,
    model_spec TEXT NOT NULL,
    model_hash TEXT NOT NULL,
    suite_name TEXT NOT NULL,
    suite_hash TEXT NOT NULL,
    suite_json TEXT NOT NULL,
    settings_json TEXT NOT NULL,
    versions_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    timings_json TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
"""


def _run(store: RunStore, model: str = "m", suite: str = "s", *, identity: str | None = None, created: float = 0.0,
         status: str = "complete", name: str | None = None, tags: dict[str, str] | None = None) -> str:
    rid = store.create_run(identity=identity or f"id-{model}-{suite}-{created}", model_spec=model, model_hash="h",
                           suite_name=suite, suite_hash="sh", suite={}, settings={}, versions={}, name=name, tags=tags)
    store._db.execute("UPDATE runs SET status=?, created_at=? WHERE run_id=?", (status, created, rid))
    return rid


def _complete_with_results(store: RunStore, rid: str) -> None:
    store.start_entry(rid, "e", {})
    store.complete_entry(
        rid, "e",
        [{"task": "e", "doc_id": 0, "prompt": "p0", "target": "a", "responses": ["a"], "metrics": {"acc": 1.0}},
         {"task": "e", "doc_id": 1, "prompt": "p1", "target": "b", "responses": ["c"], "metrics": {"acc": 0.0}}],
        [{"task": "e", "metric": "acc", "value": 0.5, "stderr": 0.5, "n": 2}],
    )
    store.finish_run(rid, {"total_s": 1})


def test_old_store_file_is_migrated_on_open_and_keeps_its_runs(tmp_path):
    path = str(tmp_path / "old.sqlite")
    db = sqlite3.connect(path)
    db.executescript(OLD_RUNS)
    db.execute("INSERT INTO runs(run_id, identity, status, model_spec, model_hash, suite_name, suite_hash, suite_json,"
               " settings_json, versions_json, created_at, updated_at) VALUES"
               " ('old-1','i','complete','m','h','s','sh','{}','{}','{}',1.0,1.0)")
    db.commit()
    db.close()

    store = RunStore(path, create=False)
    cols = {r[1] for r in store._db.execute("PRAGMA table_info(runs)")}
    assert {"name", "tags_json"} <= cols
    old = store.get_run("old-1")
    assert old.name is None and old.tags == {}
    store.label_run("old-1", "baseline", {"k": "v"})
    assert store.get_run("old-1").name == "baseline" and store.get_run("old-1").tags == {"k": "v"}
    store.close()
    again = RunStore(path)  # opening a migrated file again changes nothing
    assert again.get_run("old-1").tags == {"k": "v"}
    assert _run(again, tags={"a": "1"})


def test_name_and_tags_are_stored_and_not_part_of_identity(tmp_path):
    store = RunStore(str(tmp_path / "s.sqlite"))
    rid = _run(store, name="first", tags={"lr": "3e-4", "seed": "1"}, identity="same")
    row = store.get_run(rid)
    assert row.name == "first" and row.tags == {"lr": "3e-4", "seed": "1"}
    assert store.find_complete("same") == rid  # identity lookup ignores labels
    plain = _run(store, created=1.0)
    assert store.get_run(plain).name is None and store.get_run(plain).tags == {}


def test_label_run_merges_tags_and_replaces_the_name(tmp_path):
    store = RunStore(str(tmp_path / "s.sqlite"))
    rid = _run(store, name="old", tags={"a": "1", "b": "2"})
    store.label_run(rid, None, {"b": "3", "c": "4"})
    assert store.get_run(rid).name == "old" and store.get_run(rid).tags == {"a": "1", "b": "3", "c": "4"}
    store.label_run(rid, "new", None)
    assert store.get_run(rid).name == "new"
    with pytest.raises(EvalkitError, match="not found"):
        store.label_run("nope", "x")


def test_list_runs_filters_by_model_suite_name_and_tags(tmp_path):
    store = RunStore(str(tmp_path / "s.sqlite"))
    a = _run(store, "hub:org/a", "core", created=1, name="base", tags={"lr": "1e-4", "seed": "1"})
    b = _run(store, "hub:org/b", "core", created=2, name="cand-1", tags={"lr": "3e-4", "seed": "1"})
    c = _run(store, "smollm2-135m", "ifeval", created=3, name="cand-2", tags={"lr": "3e-4"})
    f = _run(store, "hub:org/b", "core", created=4, status="failed", tags={"lr": "3e-4"})

    def ids(**kw):
        return [r.run_id for r in store.list_runs(**kw)]

    assert ids() == [f, c, b, a]
    assert ids(model="hub:org/b") == [f, b]  # exact
    assert ids(model="hub:*") == [f, b, a]  # glob
    assert ids(model="hub:org") == []  # no substring matching
    assert ids(suite="core", include_failed=False) == [b, a]
    assert ids(name="cand-*") == [c, b]
    assert ids(tags={"lr": "3e-4"}) == [f, c, b]
    assert ids(tags={"lr": "3e-4", "seed": "1"}) == [b]  # every given tag must match
    assert ids(tags={"nokey": "x"}) == []
    assert ids(tags={"lr": "3e-4"}, limit=2) == [f, c]  # limit after the tag filter
    assert ids(model="hub:*", tags={"seed": "1"}, suite="core") == [b, a]
    assert store.count_runs("failed", tags={"lr": "3e-4"}) == 1
    assert store.count_runs("failed", model="smollm2-135m") == 0


def test_eval_settings_tags_are_frozen_sorted_pairs_and_the_reuse_note_names_them():
    s = EvalSettings(name="cand", tags={"seed": "1", "lr": "3e-4"})
    assert s.tags == (("lr", "3e-4"), ("seed", "1")) and s.tag_dict == {"lr": "3e-4", "seed": "1"}
    hash(s)  # still a frozen, hashable value
    assert EvalSettings(tags=(("b", "2"), ("a", "1"))).tags == (("a", "1"), ("b", "2"))
    assert _labels_note(EvalSettings()) == ""
    assert _labels_note(s) == "; name set to 'cand' and tags lr=3e-4, seed=1 merged in"


def test_reused_run_gets_the_new_name_and_tags(tmp_path, monkeypatch):
    """run_suite's reuse branch, with everything before it (model, suite) replaced by stand-ins."""
    from types import SimpleNamespace

    from evalkit import runner

    store = RunStore(str(tmp_path / "s.sqlite"))
    fields = {"weights": "w"}
    rid = _run(store, identity=runner.identity_hash(fields), name="old", tags={"a": "1"})
    frozen = SimpleNamespace(suite_hash="sh")
    model = SimpleNamespace(device="cpu", dtype="float32", backend="fast", weights=SimpleNamespace(weights_hash="w"))
    monkeypatch.setattr(runner, "prepare", lambda settings: (SimpleNamespace(), frozen))
    monkeypatch.setattr(runner, "get_model", lambda *a, **k: model)
    monkeypatch.setattr(runner, "run_identity", lambda *a, **k: fields)
    said: list[str] = []
    result = runner.run_suite(EvalSettings(name="new", tags={"b": "2"}, progress=False), store, said.append)
    assert result.reused and result.run_id == rid
    assert store.get_run(rid).name == "new" and store.get_run(rid).tags == {"a": "1", "b": "2"}
    assert said == [f"reusing complete run {rid}: same weights, suite and settings (--force evaluates again); "
                    "name set to 'new' and tags b=2 merged in"]


def test_parse_tags():
    assert api.parse_tags(["a=1", "b=x=y", "c=", " d = 4 ", "a=2"]) == {"a": "2", "b": "x=y", "c": "", "d": "4"}
    assert api.parse_tags(None) == {}
    for bad in ("novalue", "=1", ""):
        with pytest.raises(EvalkitError, match="KEY=VALUE"):
            api.parse_tags([bad])


def test_pandas_frames(tmp_path):
    path = str(tmp_path / "s.sqlite")
    store = RunStore(path)
    old = _run(store, "m1", created=1, name="base", tags={"lr": "1e-4"})
    _complete_with_results(store, old)
    new = _run(store, "m2", created=2, status="running", name="cand", tags={"lr": "3e-4", "seed": "7"})
    _complete_with_results(store, new)
    store.close()

    samples, metrics = api.load_run(path, "latest")  # the documented call (a path; never creates a store)
    assert list(samples["run_id"].unique()) == [new]
    assert list(samples["doc_id"]) == [0, 1] and list(samples["metric.acc"]) == [1.0, 0.0]
    assert samples["responses"][1] == ["c"]
    assert samples["metric.acc"].mean() == 0.5
    assert metrics.to_dict("records") == [{"run_id": new, "entry": "e", "task": "e", "metric": "acc", "value": 0.5,
                                           "stderr": 0.5, "n": 2}]
    frames = api.load_run(path, old)
    assert frames.samples["run_id"].unique().tolist() == [old] and len(frames.metrics) == 1

    runs = api.runs_frame(path)
    assert runs["run_id"].tolist() == [new, old] and runs["name"].tolist() == ["cand", "base"]
    assert runs["tag.lr"].tolist() == ["3e-4", "1e-4"] and runs["tag.seed"][0] == "7"
    assert runs["tag.seed"].isna().tolist() == [False, True]  # a run without the key
    assert str(runs["created"].dtype).startswith("datetime64")
    assert api.runs_frame(path, tags={"seed": "7"})["run_id"].tolist() == [new]
    assert api.runs_frame(path, model="nope").empty
    with pytest.raises(EvalkitError, match="no such file"):
        api.load_run(str(tmp_path / "missing.sqlite"))
    assert not (tmp_path / "missing.sqlite").exists()


def test_cli_bad_tag_is_one_line_exit_2(tmp_path, capsys):
    store = str(tmp_path / "s.sqlite")
    assert cli.main(["--store", store, "eval", "--model", "smollm2-135m", "--tag", "oops", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evalkit: error: --tag 'oops'")
    RunStore(store)  # the runs command needs a store file
    assert cli.main(["--store", store, "runs", "--tag", "=x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evalkit: error: --tag '=x'")


def test_cli_runs_filters_and_shows_name_and_tags(tmp_path, capsys):
    path = str(tmp_path / "s.sqlite")
    store = RunStore(path)
    a = _run(store, "hub:org/a", "core", created=1, name="base", tags={"lr": "1e-4"})
    b = _run(store, "hub:org/b", "core", created=2, name="cand", tags={"lr": "3e-4", "seed": "1"})
    c = _run(store, "other", "ifeval", created=3, tags={"lr": "3e-4"})
    f = _run(store, "hub:org/b", "core", created=4, status="failed", tags={"lr": "3e-4"})
    store.close()

    assert cli.main(["--store", path, "runs", "--tag", "lr=3e-4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["run_id"] for r in rows] == [c, b]
    assert rows[1]["name"] == "cand" and rows[1]["tags"] == {"lr": "3e-4", "seed": "1"} and rows[0]["name"] is None

    assert cli.main(["--store", path, "runs", "--tag", "lr=3e-4", "--tag", "seed=1", "--model", "hub:*",
                     "--suite", "core", "--all"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["run_id", "name"] and out[0].split()[-1] == "tags"
    assert len(out) == 3 and out[2].startswith(b) and "cand" in out[2] and out[2].rstrip().endswith("lr=3e-4,seed=1")

    assert cli.main(["--store", path, "runs", "--model", "hub:*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[2:4]] == [b, a]
    assert out[-1] == "(1 failed run hidden: evalkit runs --all)"  # the hidden count follows the filters
    assert f not in "\n".join(out)

    assert cli.main(["--store", path, "runs", "--name", "base", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])] == [a]

"""The user's own tasks: lm-eval task folders (``include_path:`` / ``--include-path``) and
inspect-ai tasks from a file (``task: file.py@name``), with the fixture in tests/fixtures/custom_tasks.

Fast tests freeze suites (resolution, hashing, one-line errors) and run the inspect file task on
inspect's scripted ``mockllm``; two slow tests run both kinds on the embedded model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.suite.config import load_suite
from evalkit.suite.freeze import freeze

CUSTOM = Path(__file__).parent / "fixtures" / "custom_tasks"
TASK = "evalkit_tiny_arith"


def _setup(tmp_path: Path, suite_text: str, folder: str = "my_tasks") -> Path:
    """A copy of the fixture task folder next to a suite file (tests edit the copy)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(CUSTOM, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    suite = tmp_path / "s.yaml"
    suite.write_text(suite_text)
    return suite


ENTRY_SUITE = f"name: custom\nentries:\n  - name: arith\n    task: {TASK}\n    include_path: my_tasks\n"


def _error(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- lm-eval task folders
def test_include_path_resolves_the_custom_task_offline(tmp_path):
    frozen = freeze(load_suite(str(_setup(tmp_path, ENTRY_SUITE))), None)
    fe = frozen.entries[0]
    assert list(fe.configs) == [TASK] and fe.source == "local"
    cfg = fe.configs[TASK]
    assert cfg["output_type"] == "multiple_choice" and callable(cfg["doc_to_text"])
    data = str(tmp_path / "my_tasks" / "tiny_arith.jsonl")
    assert cfg["dataset_kwargs"]["data_files"] == {"test": data} and data in fe.files
    canon = frozen.canonical()["entries"][0]
    # the function by its source hash, the folder by name + content: nothing machine-specific
    assert canon["configs"][TASK]["doc_to_text"].startswith("fn:utils.doc_to_text#")
    assert canon["entry"]["include_path"] == [{"folder": "my_tasks", "sha256": canon["entry"]["include_path"][0]["sha256"]}]
    assert str(tmp_path) not in str(canon)


def test_suite_hash_follows_the_users_task_and_not_its_location(tmp_path):
    suite = _setup(tmp_path / "a", ENTRY_SUITE)
    base = freeze(load_suite(str(suite)), None).suite_hash
    assert freeze(load_suite(str(_setup(tmp_path / "b", ENTRY_SUITE))), None).suite_hash == base  # moved: same hash
    tasks = tmp_path / "a" / "my_tasks"
    yaml_file = tasks / "tiny_arith.yaml"
    original = yaml_file.read_text()
    yaml_file.write_text(original.replace("test_split: test", "test_split: test\ndescription: \"Arithmetic.\\n\\n\""))
    edited_yaml = freeze(load_suite(str(suite)), None).suite_hash
    assert edited_yaml != base
    yaml_file.write_text(original)
    assert freeze(load_suite(str(suite)), None).suite_hash == base
    utils = tasks / "utils.py"
    utils.write_text(utils.read_text().replace("Answer:", "A:"))
    edited_fn = freeze(load_suite(str(suite)), None)
    assert edited_fn.suite_hash not in (base, edited_yaml)
    assert edited_fn.entries[0].configs[TASK]["doc_to_text"]({"question": "q"}) == "Question: q\nA:"
    data = tasks / "tiny_arith.jsonl"
    data.write_text(data.read_text().replace("2 + 2", "2 + 1"))
    assert freeze(load_suite(str(suite)), None).suite_hash not in (base, edited_yaml, edited_fn.suite_hash)


def test_suite_level_include_path(tmp_path):
    suite = _setup(tmp_path, f"name: custom\ninclude_path: [my_tasks]\nentries:\n  - name: arith\n    task: {TASK}\n")
    loaded = load_suite(str(suite))
    assert loaded.include_path == (str(tmp_path / "my_tasks"),)
    assert list(freeze(loaded, None).entries[0].configs) == [TASK]


def test_unknown_task_and_missing_folder_are_one_line_with_file_and_line(tmp_path):
    suite = _setup(tmp_path, "name: custom\nentries:\n  - name: arith\n    task: no_such_task_xyz\n    include_path: my_tasks\n")
    with pytest.raises(EvalkitError) as exc:
        freeze(load_suite(str(suite)), None)
    msg = _error(exc)
    assert f"{suite}:3" in msg and "no_such_task_xyz" in msg and "my_tasks" in msg
    suite.write_text(f"name: custom\nentries:\n  - name: arith\n    task: {TASK}\n    include_path: nowhere\n")
    with pytest.raises(EvalkitError) as exc:
        load_suite(str(suite))
    msg = _error(exc)
    assert f"{suite}:5" in msg and "include_path 'nowhere': no such folder" in msg
    suite.write_text(f"name: custom\ndescription: x\ninclude_path: [my_tasks, gone]\nentries:\n  - name: a\n    task: {TASK}\n")
    with pytest.raises(EvalkitError) as exc:
        load_suite(str(suite))
    assert f"{suite}:3" in _error(exc) and "'gone'" in str(exc.value)
    suite.write_text("name: custom\nentries:\n  - name: he\n    engine: inspect\n    task: humaneval\n    include_path: my_tasks\n")
    with pytest.raises(EvalkitError, match=r"s\.yaml:6: 'include_path' is for lm-eval entries"):
        load_suite(str(suite))
    suite.write_text(f"name: custom\nentries:\n  - name: arith\n    task: {TASK}\n    include_path: 3\n")
    with pytest.raises(EvalkitError, match=r"s\.yaml:5: 'include_path' must be str/list"):
        load_suite(str(suite))


def test_cli_include_path_reaches_the_frozen_suite(tmp_path, monkeypatch):
    from evalkit.cli import build_parser
    from evalkit.runner import EvalSettings, prepare

    suite = _setup(tmp_path, f"name: custom\nentries:\n  - name: arith\n    task: {TASK}\n")
    args = build_parser().parse_args(["eval", "--suite", str(suite), "--include-path", "my_tasks"])
    assert args.include_path == ["my_tasks"]
    with pytest.raises(EvalkitError) as exc:  # without the folder the task is unknown
        freeze(load_suite(str(suite)), None)
    assert f"{suite}:3" in _error(exc)
    monkeypatch.chdir(tmp_path)  # CLI folders are relative to the working directory
    _, frozen = prepare(EvalSettings(suite=str(suite), include_path=tuple(args.include_path)))
    entry = frozen.canonical()["entries"][0]["entry"]
    assert [f["folder"] for f in entry["include_path"]] == ["my_tasks"] and list(frozen.entries[0].configs) == [TASK]
    # on a suite of built-in tasks the folder still changes the hash (it may shadow a built-in task)
    builtin = tmp_path / "b.yaml"
    builtin.write_text("name: b\nentries:\n  - name: gsm8k\n    task: gsm8k\n    data_files: {test: g.jsonl}\n")
    (tmp_path / "g.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    plain = freeze(load_suite(str(builtin)), None).suite_hash
    assert freeze(load_suite(str(builtin)), None, include_path=["my_tasks"]).suite_hash != plain
    with pytest.raises(EvalkitError, match="--include-path: include_path 'gone': no such folder"):
        freeze(load_suite(str(builtin)), None, include_path=["gone"])


# ----------------------------------------------------------------------------- inspect tasks from a file
INSPECT_SUITE = ("name: custom\nentries:\n  - name: echo\n    engine: inspect\n    task: my_tasks/tiny_inspect.py@tiny_echo\n"
                 "    gen_kwargs: {max_gen_toks: 8}\n")


def test_inspect_file_task_freezes_with_the_files_hash(tmp_path):
    suite = _setup(tmp_path, INSPECT_SUITE)
    frozen = freeze(load_suite(str(suite)), None)
    fe = frozen.entries[0]
    cfg = fe.canonical["my_tasks/tiny_inspect.py@tiny_echo"]
    assert cfg["task_name"] == "tiny_echo" and cfg["file"] == "tiny_inspect.py" and cfg["max_tokens"] == 8
    assert fe.source == "local" and str(tmp_path / "my_tasks" / "tiny_inspect.py") in fe.files
    task_file = tmp_path / "my_tasks" / "tiny_inspect.py"
    task_file.write_text(task_file.read_text().replace("number 9", "number 8").replace('target="9"', 'target="8"'))
    assert freeze(load_suite(str(suite)), None).suite_hash != frozen.suite_hash


@pytest.mark.parametrize("task, expected", [
    ("my_tasks/nope.py@tiny_echo", "task file 'my_tasks/nope.py' not found"),
    ("my_tasks/tiny_inspect.py@other", "no @task 'other' in my_tasks/tiny_inspect.py (found: tiny_echo)"),
    ("my_tasks/utils.py@doc_to_text", "no @task 'doc_to_text'"),
    ("nope_task", "unknown task 'nope_task'"),
])
def test_inspect_file_task_errors_are_one_line_with_file_and_line(tmp_path, task, expected):
    suite = _setup(tmp_path, f"name: custom\nentries:\n  - name: a\n    task: {TASK}\n    include_path: my_tasks\n"
                             f"  - name: echo\n    engine: inspect\n    task: {task}\n")
    with pytest.raises(EvalkitError) as exc:
        freeze(load_suite(str(suite)), None)
    msg = _error(exc)
    assert f"{suite}:6" in msg and expected in msg


def test_inspect_file_task_runs_on_a_scripted_model(tmp_path, monkeypatch):
    from inspect_ai.model import ModelOutput, ModelUsage, get_model

    from evalkit.engines.base import RunContext, get_engine
    from evalkit.engines.inspect import model_api
    from evalkit.models.loader import ResolvedWeights
    from evalkit.store import RunStore

    def output(input, tools, tool_choice, config):
        out = ModelOutput.from_content("mockllm/model", "The answer is 4.")
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        return out

    model = get_model("mockllm/model", custom_outputs=output)
    monkeypatch.setattr(model_api, "inspect_model", lambda handle, **kw: model)

    class Handle:
        weights = ResolvedWeights("/nowhere", "sha256:test")

    suite = _setup(tmp_path, INSPECT_SUITE)
    fe = freeze(load_suite(str(suite)), None).entries[0]
    store = RunStore(str(tmp_path / "store.sqlite"))
    run_id = store.create_run(identity="i", model_spec="mock", model_hash="h", suite_name="s", suite_hash="x",
                              suite={}, settings={}, versions={})
    get_engine("inspect").run(fe, Handle(), RunContext(store=store, run_id=run_id))  # type: ignore[arg-type]
    metrics = {m["metric"]: m for m in store.metrics(run_id)}
    assert metrics["accuracy"]["value"] == pytest.approx(1 / 3) and metrics["accuracy"]["n"] == 3
    samples = store.samples(run_id)
    assert len(samples) == 3 and [s["metrics"]["match"] for s in samples] == [1.0, 0.0, 0.0]
    assert all(s["responses"] == ["The answer is 4."] for s in samples)
    assert list((tmp_path / "inspect-logs" / run_id).glob("*.eval"))


# ----------------------------------------------------------------------------- end to end (real model)
@pytest.mark.slow
def test_custom_lmeval_task_end_to_end(tmp_path):
    from evalkit.runner import EvalSettings, run_suite
    from evalkit.store import RunStore

    suite = _setup(tmp_path, ENTRY_SUITE.replace("include_path: my_tasks\n", "include_path: my_tasks\n    limit: 2\n"))
    store = RunStore(str(tmp_path / "runs" / "evalkit.sqlite"))
    result = run_suite(EvalSettings(model="smollm2-135m", suite=str(suite), progress=False), store)
    m = {r["metric"]: r for r in result.metrics if r["task"] == "arith"}
    assert "acc" in m and 0.0 <= m["acc"]["value"] <= 1.0
    samples = store.samples(result.run_id)
    assert len(samples) == 2 and samples[0]["prompt"].startswith("Question: What is 2 + 2?")


@pytest.mark.slow
def test_inspect_file_task_end_to_end(tmp_path):
    from evalkit.runner import EvalSettings, run_suite
    from evalkit.store import RunStore

    suite = _setup(tmp_path, INSPECT_SUITE)
    store = RunStore(str(tmp_path / "runs" / "evalkit.sqlite"))
    result = run_suite(EvalSettings(model="smollm2-135m", suite=str(suite), limit=2, progress=False), store)
    m = {r["metric"]: r for r in result.metrics}
    assert m["accuracy"]["n"] == 2 and 0.0 <= m["accuracy"]["value"] <= 1.0
    assert len(store.samples(result.run_id)) == 2

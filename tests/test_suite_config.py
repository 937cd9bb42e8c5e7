from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.suite.config import load_suite
from evalkit.suite.freeze import freeze

ROOT = Path(__file__).parent.parent


def test_core_suites_parse():
    core = load_suite("core")
    assert [e.name for e in core.entries] == ["mmlu", "gsm8k", "ifeval"]
    assert core.entry("mmlu").num_fewshot == 5 and core.entry("ifeval").apply_chat_template
    full = load_suite(str(ROOT / "suites" / "core-full.yaml"))
    assert all(e.limit is None for e in full.entries)


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return str(p)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "name: x\nentries:\n  - name: a\n    task: [unclosed\n")
    with pytest.raises(EvalkitError, match=rf"{path}:\d+: malformed YAML"):
        load_suite(path)


def test_unknown_key_names_its_line(tmp_path):
    path = _write(tmp_path, "name: x\nentries:\n  - name: a\n    task: gsm8k\n    limt: 3\n")
    with pytest.raises(EvalkitError, match=rf"{path}:5: unknown entry key 'limt'"):
        load_suite(path)


def test_wrong_type_and_duplicates(tmp_path):
    path = _write(tmp_path, "name: x\nentries:\n  - name: a\n    task: gsm8k\n    limit: many\n")
    with pytest.raises(EvalkitError, match=":5: 'limit' must be int"):
        load_suite(path)
    path = _write(tmp_path, "name: x\nentries:\n  - {name: a, task: gsm8k}\n  - {name: a, task: ifeval}\n")
    with pytest.raises(EvalkitError, match=":4: duplicate entry name 'a'"):
        load_suite(path)


def test_missing_suite():
    with pytest.raises(EvalkitError, match="no such file"):
        load_suite("does-not-exist")


def test_freeze_hash_is_stable_and_covers_data(tiny_suite, data_dir):
    suite = load_suite(str(tiny_suite))
    a = freeze(suite, str(data_dir))
    b = freeze(suite, str(data_dir))
    assert a.suite_hash == b.suite_hash and a.all_local
    mmlu = next(e for e in a.entries if e.entry.name == "mmlu")
    assert sorted(mmlu.configs) == ["mmlu_astronomy", "mmlu_marketing"]
    assert mmlu.note == "2/57 MMLU subjects"
    # the same suite on other bytes is another suite
    with open(data_dir / "gsm8k" / "test.jsonl", "a") as fh:
        fh.write(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    assert freeze(suite, str(data_dir)).suite_hash != a.suite_hash
    # and a different limit is a different resolved config
    assert freeze(suite, str(data_dir), limit=1).suite_hash != freeze(suite, str(data_dir)).suite_hash


def test_corrupt_jsonl_row_names_file_and_line(tiny_suite, data_dir):
    path = data_dir / "gsm8k" / "test.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = '{"question": "broken", "answer": '
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalkitError, match=rf"{path}:3: not valid JSON"):
        freeze(load_suite(str(tiny_suite)), str(data_dir))


def test_missing_data_file(tiny_suite, data_dir):
    (data_dir / "ifeval" / "input_data.jsonl").unlink()
    with pytest.raises(EvalkitError, match="missing IFEval file"):
        freeze(load_suite(str(tiny_suite)), str(data_dir))


def test_bad_mmlu_answer(tiny_suite, data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    path = data_dir / "mmlu" / "test" / "astronomy_test.csv"
    path.write_text(path.read_text().replace(",2\n", ",7\n", 1))
    with pytest.raises(EvalkitError, match=rf"astronomy_test.csv:2: answer must be 0-3"):
        freeze(load_suite(str(tiny_suite)), str(data_dir))


def test_unknown_lm_eval_task(tmp_path, data_dir):
    path = _write(tmp_path, "name: x\nentries:\n  - name: a\n    task: no_such_task_xyz\n")
    with pytest.raises(EvalkitError, match="task 'no_such_task_xyz': not an lm-eval task"):
        freeze(load_suite(path), str(data_dir))


def test_offline_without_data_is_one_clear_error(tiny_suite, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EvalkitError, match="need the Hugging Face hub.*--data-dir"):
        freeze(load_suite(str(tiny_suite)), None)


def test_missing_data_dir(tiny_suite, tmp_path):
    with pytest.raises(EvalkitError, match="no such folder"):
        freeze(load_suite(str(tiny_suite)), str(tmp_path / "nope"))

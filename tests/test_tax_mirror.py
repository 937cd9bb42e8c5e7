"""Local mirrors for the tax suite: ARC, PIQA and WinoGrande in their authors' formats, converted to
the hub schemas that lm-eval's own task configs read (tests/fixtures/tax; no model runs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evalkit.data import mirror
from evalkit.errors import EvalkitError
from evalkit.suite.config import load_suite
from evalkit.suite.freeze import freeze

TAX = Path(__file__).parent / "fixtures" / "tax"
TASKS = ["arc_easy", "arc_challenge", "piqa", "winogrande"]


@pytest.fixture
def tax_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the fixture mirror, with a private conversion cache."""
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "tax"
    shutil.copytree(TAX, dest)
    return dest


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _splits(resolved: mirror.ResolvedData, task: str) -> dict[str, str]:
    return resolved.tasks[task]["dataset_kwargs"]["data_files"]


def test_adapter_is_inferred_from_the_task_name():
    assert {t: mirror.adapter_for(t, None) for t in TASKS} == {t: t for t in TASKS}
    assert mirror.adapter_for("ai2_arc", None) == "ai2_arc"
    assert mirror.adapter_for("arc_challenge_chat", None) == "ai2_arc"


def test_arc_converts_to_hub_schema_with_dev_then_train(tax_dir):
    res = mirror.adapter_for("arc_easy", None)
    resolved = mirror.ADAPTERS[res](str(tax_dir), ["arc_easy"])
    assert resolved.source == "local" and len(resolved.files) == 2
    files = _splits(resolved, "arc_easy")
    assert sorted(files) == ["test", "train", "validation"]
    test = _rows(files["test"])
    assert [r["id"] for r in test] == [f"Fixture_E_{i}" for i in range(1, 6)]  # Dev rows, then Train
    assert [r["id"] for r in _rows(files["train"])] == ["Fixture_E_4", "Fixture_E_5"]
    assert [r["id"] for r in _rows(files["validation"])] == ["Fixture_E_1", "Fixture_E_2", "Fixture_E_3"]
    for r in test:
        assert set(r) == {"id", "question", "choices", "answerKey"} and isinstance(r["question"], str)
        assert set(r["choices"]) == {"text", "label"} and len(r["choices"]["text"]) == len(r["choices"]["label"])
    three = test[1]  # 3 choices, labelled 1-3
    assert three == {"id": "Fixture_E_2", "question": "What state of matter is ice?",
                     "choices": {"text": ["gas", "solid", "liquid"], "label": ["1", "2", "3"]}, "answerKey": "2"}
    assert three["choices"]["label"].index(three["answerKey"]) == 1
    assert test[2]["choices"]["label"].index(test[2]["answerKey"]) == 3  # "4" of 1-4
    assert len(test[3]["choices"]["text"]) == 5 and test[3]["answerKey"] == "C"


def test_piqa_and_winogrande_convert_to_hub_schema(tax_dir):
    piqa = mirror.ADAPTERS["piqa"](str(tax_dir), ["piqa"])
    assert piqa.tasks["piqa"]["training_split"] is None  # no PIQA train file exists
    rows = _rows(_splits(piqa, "piqa")["validation"])
    assert [r["label"] for r in rows] == [0, 1, 0]
    assert set(rows[1]) == {"goal", "sol1", "sol2", "label"} and rows[1]["sol2"] == "stuff them with newspaper."

    wino = mirror.ADAPTERS["winogrande"](str(tax_dir), ["winogrande"])
    files = _splits(wino, "winogrande")
    assert sorted(files) == ["train", "validation"]
    dev = _rows(files["validation"])
    assert [r["answer"] for r in dev] == ["1", "2", "2"]  # strings, as on the hub
    assert set(dev[0]) == {"sentence", "option1", "option2", "answer"}
    assert len(_rows(files["train"])) == 2


def test_tax_suite_freezes_offline(tax_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    suite = load_suite("tax")
    assert [e.name for e in suite.entries] == TASKS and all(e.limit is None for e in suite.entries)
    a = freeze(suite, str(tax_dir))
    assert a.all_local
    for fe in a.entries:
        assert list(fe.configs) == [fe.entry.name]
        cfg = fe.configs[fe.entry.name]
        assert cfg["dataset_path"] == "json" and cfg["dataset_name"] is None
    assert freeze(suite, str(tax_dir)).suite_hash == a.suite_hash
    with open(tax_dir / "piqa" / "valid-labels.lst", "w") as fh:
        fh.write("1\n1\n0\n")
    assert freeze(suite, str(tax_dir)).suite_hash != a.suite_hash


EXPECTED = {  # task -> (eval doc index, prompt, gold index, choices)
    "arc_easy": (1, "Question: What state of matter is ice?\nAnswer:", 1, ["gas", "solid", "liquid"]),
    "arc_challenge": (2, "Question: Which gas do plants take in for photosynthesis?\nAnswer:", 2,
                      ["oxygen", "nitrogen", "carbon dioxide", "helium"]),
    "piqa": (1, "Question: To dry wet shoes faster,\nAnswer:", 1,
             ["seal them in a plastic bag.", "stuff them with newspaper."]),
    # WinoGrande scores the options as contexts: "text" is the gold context index, target the continuation
    "winogrande": (1, 1, "was too small.", ["The trophy did not fit in the suitcase because the trophy",
                                            "The trophy did not fit in the suitcase because the suitcase"]),
}


@pytest.mark.parametrize("task", TASKS)
def test_lm_eval_task_reads_the_converted_file(tax_dir, monkeypatch, task):
    from lm_eval.api.task import ConfigurableTask

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    frozen = freeze(load_suite("tax"), str(tax_dir))
    cfg = next(fe for fe in frozen.entries if fe.entry.name == task).configs[task]
    lm_task = ConfigurableTask(config=dict(cfg))
    docs = list(lm_task.eval_docs)
    assert len(docs) == {"arc_easy": 5, "arc_challenge": 3, "piqa": 3, "winogrande": 3}[task]
    i, text, target, choices = EXPECTED[task]
    assert lm_task.doc_to_text(docs[i]) == text
    assert lm_task.doc_to_target(docs[i]) == target
    assert lm_task.doc_to_choice(docs[i]) == choices


def _edit_line(path: Path, lineno: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = edit(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


BAD_ROWS = [
    ("arc_easy/ARC-Easy-Dev.jsonl", 2, lambda s: s.replace('"answerKey":"2"', '"answerKey":"B"'),
     r"ARC-Easy-Dev.jsonl:2: answerKey 'B' is not one of the choice labels"),
    ("arc_challenge/ARC-Challenge-Train.jsonl", 1, lambda s: s.replace('"stem":', '"stm":'),
     r"ARC-Challenge-Train.jsonl:1: 'stem' must be a non-empty string"),
    ("piqa/valid-labels.lst", 2, lambda s: "2", r"valid-labels.lst:2: label must be 0 or 1"),
    ("piqa/valid.jsonl", 3, lambda s: s.replace('"sol2"', '"solution2"'), r"valid.jsonl:3: missing field\(s\) sol2"),
    ("winogrande/dev.jsonl", 3, lambda s: s.replace('"answer": "2"', '"answer": "3"'),
     r"dev.jsonl:3: answer must be \"1\" or \"2\", got '3'"),
    ("winogrande/train_xs.jsonl", 2, lambda s: s.replace(" _ ", " "),
     r"train_xs.jsonl:2: 'sentence' must contain exactly one '_'"),
]


@pytest.mark.parametrize("rel,lineno,edit,message", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_bad_row_is_one_line_naming_file_and_line(tax_dir, rel, lineno, edit, message):
    _edit_line(tax_dir / rel, lineno, edit)
    with pytest.raises(EvalkitError, match=message) as info:
        freeze(load_suite("tax"), str(tax_dir))
    assert "\n" not in str(info.value) and str(tax_dir / rel) in str(info.value)


def test_piqa_label_count_must_match(tax_dir):
    (tax_dir / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(EvalkitError, match=r"valid-labels.lst: 2 labels for 3 rows"):
        freeze(load_suite("tax"), str(tax_dir))


def test_shared_data_row_counts(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    want = {"arc_easy": 570 + 2251, "arc_challenge": 299 + 1119, "piqa": 1838, "winogrande": 1267}
    for task, n in want.items():
        resolved = mirror.ADAPTERS[mirror.adapter_for(task, None)](str(shared_data), [task])
        files = _splits(resolved, task)
        assert len(_rows(files.get("test") or files["validation"])) == n


def test_calibration_skips_tasks_whose_target_is_not_a_choice_index():
    from evalkit.engines.lmeval.results import metric_rows

    def sample(doc_id, target, lls, acc):
        return {"task": "t", "doc_id": doc_id, "target": target, "loglikelihoods": lls, "metrics": {"acc": acc}}

    wino = [sample(0, "was too small.", [-3.0, -2.0], 1.0), sample(1, "had forgotten her own.", [-1.0, -2.0], 0.0)]
    rows, _ = metric_rows("winogrande", {"winogrande": {"acc,none": 0.5}}, {"winogrande": wino}, True)
    assert {r["metric"] for r in rows} == {"acc"}  # no ECE/Brier, and no crash
    arc = [sample(0, 1, [-3.0, -1.0, -2.0], 1.0), sample(1, "0", [-1.0, -2.0], 1.0)]
    rows, _ = metric_rows("arc", {"arc": {"acc,none": 1.0}}, {"arc": arc}, True)
    assert {"ece", "brier"} <= {r["metric"] for r in rows}

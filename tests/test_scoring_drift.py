"""`evalkit score` with responses whose prompts drifted from the data (upstream prompt edits),
responses matched by key in any order, and the errors that must stay errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.scoring import score_responses

FIX = Path(__file__).parent / "fixtures" / "score_drift"
DATA = str(FIX / "input_data.jsonl")
DRIFTED = str(FIX / "responses_drifted.jsonl")


def _rows(path):
    return [json.loads(line) for line in open(path)]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _lm_eval_reference(docs, responses):
    from lm_eval.tasks.ifeval import utils

    random.seed(0)
    out = [utils.process_results(doc, [resp]) for doc, resp in zip(docs, responses)]
    flat = [x for r in out for x in r["inst_level_strict_acc"]]
    return {
        "prompt_level_strict_acc": sum(r["prompt_level_strict_acc"] for r in out) / len(out),
        "inst_level_strict_acc": sum(flat) / len(flat),
    }


def test_drifted_prompt_is_scored_with_one_warning_line(capsys):
    assert main(["score", "--task", "ifeval", "--data", DATA, "--responses", DRIFTED, "--json"]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evalkit: warning: score: 1 response prompt(s)")
    assert 'key 12 (row 2): "one placeholder" -> "3 placeholders"' in err[0]
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["matched_by"] == "order"
    assert out["prompt_drift"] == [{"key": "12", "row": 2, "diff": '"one placeholder" -> "3 placeholders"'}]
    # scored against the data row (kwargs num_placeholders=3: the one-placeholder answer fails it)
    m = out["metrics"]
    assert m["prompt_level_strict_acc"] == pytest.approx(3 / 5)
    assert m["inst_level_strict_acc"] == pytest.approx(4 / 6)
    ref = _lm_eval_reference(_rows(DATA), [r["response"] for r in _rows(DRIFTED)])
    assert m["prompt_level_strict_acc"] == pytest.approx(ref["prompt_level_strict_acc"])
    assert m["inst_level_strict_acc"] == pytest.approx(ref["inst_level_strict_acc"])


def test_several_drifted_rows_share_one_warning_line(tmp_path, capsys):
    rows = _rows(DRIFTED)
    rows[2]["prompt"] = rows[2]["prompt"].replace("at dawn", "at dusk")
    resp = _write(tmp_path / "r.jsonl", rows)
    assert main(["score", "--task", "ifeval", "--data", DATA, "--responses", resp]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 response prompt(s)" in err[0]
    assert "key 12 (row 2)" in err[0] and 'key 13 (row 3): "dusk" -> "dawn"' in err[0]


def test_strict_prompts_makes_drift_an_error(capsys):
    rc = main(["score", "--task", "ifeval", "--data", DATA, "--responses", DRIFTED, "--strict-prompts"])
    assert rc == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evalkit: error: score: --strict-prompts:")
    assert "key 12 (row 2)" in err[0] and captured.out == ""
    with pytest.raises(EvalkitError, match="strict-prompts"):
        score_responses("ifeval", DATA, DRIFTED, strict_prompts=True)


def test_strict_prompts_passes_when_prompts_agree(tmp_path):
    docs = _rows(DATA)
    rows = [{"prompt": d["prompt"], "response": r["response"]} for d, r in zip(docs, _rows(DRIFTED))]
    result = score_responses("ifeval", DATA, _write(tmp_path / "r.jsonl", rows), strict_prompts=True)
    assert result["warnings"] == [] and result["prompt_drift"] == []


def test_count_mismatch_is_an_error(tmp_path, capsys):
    rows = _rows(DRIFTED)
    short = _write(tmp_path / "short.jsonl", rows[:-1])
    with pytest.raises(EvalkitError, match="has 4 responses but .* has 5 rows \\(matched by order\\)"):
        score_responses("ifeval", DATA, short)
    keyed = [dict(r, key=d["key"]) for d, r in zip(_rows(DATA), rows)]
    extra = _write(tmp_path / "extra.jsonl", keyed + [dict(keyed[0], key=99)])
    assert main(["score", "--task", "ifeval", "--data", DATA, "--responses", extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 6 responses but" in err[0] and "(matched by key)" in err[0]


def test_key_matching_when_order_differs(tmp_path):
    docs = _rows(DATA)
    keyed = [dict(r, key=d["key"]) for d, r in zip(docs, _rows(DRIFTED))]
    in_order = score_responses("ifeval", DATA, _write(tmp_path / "a.jsonl", keyed))
    shuffled = list(reversed(keyed))
    shuffled = shuffled[2:] + shuffled[:2]
    assert [r["key"] for r in shuffled] != [d["key"] for d in docs]
    out = score_responses("ifeval", DATA, _write(tmp_path / "b.jsonl", shuffled))
    assert out["matched_by"] == "key" and out["metrics"] == pytest.approx(in_order["metrics"])
    assert out["samples"] == in_order["samples"]  # per-sample rows come back in data order
    assert [d["key"] for d in out["prompt_drift"]] == ["12"] and out["prompt_drift"][0]["row"] == 2
    # by order, the same shuffled file is misaligned: its first prompt belongs to another row
    unkeyed = _write(tmp_path / "c.jsonl", [{k: v for k, v in r.items() if k != "key"} for r in shuffled])
    with pytest.raises(EvalkitError, match="c.jsonl:1: prompt does not match row 1"):
        score_responses("ifeval", DATA, unkeyed)


def test_key_problems_are_errors(tmp_path):
    docs = _rows(DATA)
    keyed = [dict(r, key=d["key"]) for d, r in zip(docs, _rows(DRIFTED))]
    dup = [dict(r) for r in keyed]
    dup[4]["key"] = dup[3]["key"]
    with pytest.raises(EvalkitError, match="duplicate key 14"):
        score_responses("ifeval", DATA, _write(tmp_path / "dup.jsonl", dup))
    wrong = [dict(r) for r in keyed]
    wrong[4]["key"] = 99
    with pytest.raises(EvalkitError, match="no response for key\\(s\\) 15"):
        score_responses("ifeval", DATA, _write(tmp_path / "wrong.jsonl", wrong))
    partial = [dict(r) for r in keyed]
    del partial[0]["key"]
    with pytest.raises(EvalkitError, match="4 of 5 responses carry a key"):
        score_responses("ifeval", DATA, _write(tmp_path / "partial.jsonl", partial))


def test_a_different_prompt_is_still_an_error_without_strict(tmp_path):
    rows = _rows(DRIFTED)
    rows[3]["prompt"] = "Tell me about the weather on Mars."
    with pytest.raises(EvalkitError, match="r.jsonl:4: prompt does not match row 4 .*not an edit"):
        score_responses("ifeval", DATA, _write(tmp_path / "r.jsonl", rows))


def test_real_ifeval_key_2785_drift(shared_data, tmp_path):
    """The published GPT-4 responses answer key 2785's older text; same shape, real data."""
    data = str(shared_data / "ifeval" / "input_data.jsonl")
    docs = _rows(data)
    rows = [{"prompt": d["prompt"], "response": d["prompt"].lower()} for d in docs]
    row = next(i for i, d in enumerate(docs) if d["key"] == 2785)
    rows[row]["prompt"] = rows[row]["prompt"].replace("at least 3 placeholders", "at least one placeholder")
    out = score_responses("ifeval", data, _write(tmp_path / "r.jsonl", rows))
    assert out["prompt_drift"] == [
        {"key": "2785", "row": row + 1, "diff": '"one placeholder" -> "3 placeholders"'}
    ]
    assert len(out["warnings"]) == 1
    with pytest.raises(EvalkitError, match="key 2785"):
        score_responses("ifeval", data, _write(tmp_path / "r.jsonl", rows), strict_prompts=True)


def test_langdetect_is_seeded_so_identical_text_scores_identically(tmp_path):
    """langdetect keeps its own unseeded RNG: 'Hello world' is judged English only some of the
    time unless DetectorFactory.seed is set; scoring sets it (and restores it afterwards)."""
    from langdetect import DetectorFactory

    data = _write(tmp_path / "d.jsonl", [
        {"key": k, "prompt": "Respond in English.", "instruction_id_list": ["language:response_language"],
         "kwargs": [{"language": "en"}]} for k in range(1, 9)
    ])
    resp = _write(tmp_path / "r.jsonl", [{"response": "Hello world"}] * 8)
    before = DetectorFactory.seed
    runs = [score_responses("ifeval", data, resp)["metrics"]["prompt_level_strict_acc"] for _ in range(3)]
    assert runs == [runs[0]] * 3 and runs[0] in (0.0, 1.0)  # 8 identical rows agree within and across runs
    assert DetectorFactory.seed == before


def test_langdetect_is_seeded_the_same_way_in_eval_and_score():
    """Unseeded, langdetect judges short text differently run to run; seeded, always the same."""
    from langdetect import DetectorFactory, detect

    from evalkit.engines.lmeval.determinism import seeded_langdetect

    before = DetectorFactory.seed
    with seeded_langdetect():
        seen = {detect("Hello world") for _ in range(20)}
    assert len(seen) == 1 and DetectorFactory.seed == before

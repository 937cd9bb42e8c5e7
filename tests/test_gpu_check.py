"""bench/gpu_check.py (the prepared GPU check): prompt building, records, the correctness gate, staging, and
(slow) the whole pipeline in its CPU dry-run mode through bench/gpu_check.sh."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
assert _spec and _spec.loader
gc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gc)
SHARED = ROOT.parent / "shared" / "data"


def _write_data(root: Path) -> None:
    (root / "mmlu" / "dev").mkdir(parents=True)
    (root / "mmlu" / "test").mkdir(parents=True)
    (root / "gsm8k").mkdir()
    head = "question,choice0,choice1,choice2,choice3,answer\n"
    for subject in ("anatomy", "virology"):
        (root / "mmlu" / "dev" / f"{subject}_dev.csv").write_text(head + "".join(f"Shot {i}?,a,b,c,d,{i % 4}\n" for i in range(6)))
        (root / "mmlu" / "test" / f"{subject}_test.csv").write_text(head + "".join(f" Q{i} ?,w,x,y,z,{i % 4}\n" for i in range(3)))
    (root / "gsm8k" / "train.jsonl").write_text("".join(json.dumps({"question": f"T{i}", "answer": f"A\n#### {i}"}) + "\n" for i in range(6)))
    (root / "gsm8k" / "test.jsonl").write_text("".join(json.dumps({"question": f"P{i}", "answer": "#### 1"}) + "\n" for i in range(5)))


def test_prompts_follow_lm_eval_templates():
    shot = {"question": "1+1?", "choices": ["1", "2", "3", "4"], "answer": 1}
    doc = {"question": " 2+2? ", "choices": ["4", "5", "6", "7"], "answer": 0}
    ctx = gc.mmlu_context("high_school_mathematics", [shot], doc)
    assert ctx == ("The following are multiple choice questions (with answers) about high school mathematics.\n\n"
                   "1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n2+2?\nA. 4\nB. 5\nC. 6\nD. 7\nAnswer:")
    g = gc.gsm8k_context([{"question": "q1", "answer": "a1\n#### 1"}], {"question": "q2"})
    assert g == "Question: q1\nAnswer: a1\n#### 1\n\nQuestion: q2\nAnswer:"


def test_build_requests_and_records(tmp_path):
    _write_data(tmp_path)
    mmlu, gsm = gc.build_requests(str(tmp_path), mmlu_subjects=1, mmlu_limit=2, gsm8k_limit=4, max_gen_toks=16)
    assert len(mmlu) == 8 and len(gsm) == 4
    assert [r.args[1] for r in mmlu[:4]] == [" A", " B", " C", " D"]
    assert mmlu[0].metadata == ("mmlu_anatomy", 0, 1) and mmlu[4].metadata == ("mmlu_anatomy", 1, 1)
    assert mmlu[0].args[0].count("Answer:") == 6  # 5 shots + the question
    assert gsm[0].args[1] == {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False, "temperature": 0.0,
                              "max_gen_toks": 16}
    recs = gc.mc_records(mmlu, [(-float(i % 4), False) for i in range(8)])
    assert [r["lls"] for r in recs] == [[0.0, -1.0, -2.0, -3.0]] * 2
    texts = gc.gen_records(gsm, ["a", "b", "c", "d"])
    assert texts[2] == {"task": "gsm8k", "doc_id": 2, "text": "c", "metrics": {}}


def test_correctness_gate():
    assert gc.correctness({}, real_weights=False) == "correctness on real weights: not run (weights not carried)".split(": ", 1)[1]
    good = {"mmlu": {"rate": 0.99, "rate_ties": 0.996}, "gsm8k": {"rate": 0.95}}
    res = gc.correctness(good, real_weights=True)
    assert res["pass"] and res["values"] == {"mmlu_argmax": 0.996, "gsm8k_identical": 0.95}
    bad = gc.correctness({"mmlu": {"rate": 0.999}, "gsm8k": {"rate": 0.9}}, real_weights=True)
    assert not bad["pass"] and bad["passed"] == {"mmlu_argmax": True, "gsm8k_identical": False}


def test_stage_copies_a_small_subset(tmp_path):
    _write_data(tmp_path / "src")
    info = gc.stage(str(tmp_path / "src"), str(tmp_path / "dst"), gsm8k_limit=3)
    assert info["files"] == 6
    assert len((tmp_path / "dst" / "gsm8k" / "test.jsonl").read_text().splitlines()) == 3
    assert len((tmp_path / "dst" / "gsm8k" / "train.jsonl").read_text().splitlines()) == 5


def test_block_modules_hides_packages(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "gpu_check_fake_pkg", raising=False)
    gc.block_modules({"gpu_check_fake_pkg"})
    try:
        assert importlib.util.find_spec("gpu_check_fake_pkg") is None
        with pytest.raises(ImportError):
            __import__("gpu_check_fake_pkg")
    finally:
        del sys.modules["gpu_check_fake_pkg"]


def test_stage_model_copies_config_and_tokenizer_not_weights(tmp_path):
    info = gc.stage_model(dest=str(tmp_path / "gpu_model"))  # from the embedded model (make setup converts it)
    cfg = json.loads((tmp_path / "gpu_model" / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["hidden_size"] == 576 and cfg["num_hidden_layers"] == 30
    assert (tmp_path / "gpu_model" / "tokenizer.json").is_file()
    assert not list((tmp_path / "gpu_model").glob("*.safetensors")) and info["bytes"] < 8 * 2**20


@pytest.mark.slow
def test_dry_run_writes_json(tmp_path):
    """bench/gpu_check.sh --dry-run: the GPU pipeline on CPU (random-init model, 2 subjects x 2 questions,
    4 GSM8K items), lm_eval from bench/wheels with datasets & co. blocked when the wheels are there."""
    if not (ROOT / "bench" / "stage" / "data" / "mmlu" / "test").is_dir():
        if not SHARED.is_dir():
            pytest.skip("no staged data and no ../shared/data to stage from")
        gc.stage(str(SHARED))
    if not (ROOT / "bench" / "stage" / "gpu_model" / "config.json").is_file():
        gc.stage_model()
    env = {**os.environ, "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(gc.JSON_KEYS) <= set(rep)
    assert rep["device"] == "cpu" and rep["ok"] is True
    assert rep["correctness"] == "not run (weights not carried)"
    for arm in gc.ARMS:
        assert set(gc.ARM_KEYS) <= set(rep["arms"][arm])
        assert rep["arms"][arm]["mmlu_requests"] == 16 and rep["arms"][arm]["gsm8k_requests"] == 4
        assert rep["arms"][arm]["prefill_tok_s"] > 0 and rep["arms"][arm]["peak_mem_bytes"] is None
    assert rep["agreement"]["mmlu"]["n"] == 4 and rep["agreement"]["gsm8k"]["n"] == 4
    assert "correctness on real weights: not run (weights not carried)" in (tmp_path / "gpu_check.log").read_text()

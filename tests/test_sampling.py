"""pass@k / maj@k for lm-eval generation tasks, with scripted responses (no model)."""

from __future__ import annotations

import json

import pytest

from evalkit.analysis.passk import pass_at_k
from evalkit.engines.lmeval.engine import LmEvalEngine
from evalkit.engines.lmeval.sampling import _majority, sampling_metrics
from evalkit.errors import EvalkitError
from evalkit.suite.config import SuiteEntry, load_suite


def test_majority_breaks_ties_by_first_seen():
    assert _majority(["3", "5", "5", "3"]) == "3"
    assert _majority(["1", "2", "2"]) == "2"


def test_gsm8k_pass_and_maj_at_k(data_dir):
    entry = SuiteEntry(name="gsm8k", task="gsm8k", num_fewshot=0, samples=4, ks=[1, 2, 4], temperature=0.7)
    frozen = LmEvalEngine().freeze(entry, str(data_dir), str(data_dir), limit=None)
    cfg = frozen.configs["gsm8k"]
    assert cfg["repeats"] == 4 and cfg["generation_kwargs"]["do_sample"] and cfg["generation_kwargs"]["temperature"] == 0.7
    docs = [json.loads(line) for line in open(data_dir / "gsm8k" / "test.jsonl")]
    # doc 0: gold 13; doc 1: gold 6
    samples = [
        {"task": "gsm8k", "doc_id": 0, "doc": docs[0], "metrics": {}, "extra": {},
         "responses": ["#### 13", "#### 12", "so 13", "#### 13"]},  # strict: 2/4 correct; flexible: 3/4
        {"task": "gsm8k", "doc_id": 1, "doc": docs[1], "metrics": {}, "extra": {},
         "responses": ["#### 5", "#### 7", "#### 7", "#### 6"]},  # strict 1/4; majority of all 4 is 7 (wrong)
    ]
    rows = {r["metric"]: r for r in sampling_metrics(entry, frozen.configs, {"gsm8k": samples})}
    s0, s1 = samples[0]["metrics"], samples[1]["metrics"]
    assert s0["n_correct,strict-match"] == 2 and s0["n_correct,flexible-extract"] == 3
    assert s1["n_correct,strict-match"] == 1
    assert s0["pass@2,strict-match"] == pytest.approx(pass_at_k(4, 2, 2))
    assert rows["pass@1,strict-match"]["value"] == pytest.approx((0.5 + 0.25) / 2)
    assert rows["pass@4,strict-match"]["value"] == pytest.approx(1.0)
    # maj@1 = first sample; maj@4: doc0 "13" (wins 2-1 strict), doc1 "7" (wrong)
    assert s0["maj@1,strict-match"] == 1.0 and s1["maj@1,strict-match"] == 0.0
    assert rows["maj@4,strict-match"]["value"] == pytest.approx(0.5)
    assert samples[1]["extra"]["sampled_answers"]["strict-match"] == ["5", "7", "7", "6"]


def test_ks_must_fit_samples(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nentries:\n  - name: g\n    task: gsm8k\n    samples: 4\n    ks: [1, 8]\n")
    with pytest.raises(EvalkitError, match=":6: 'ks' must be whole numbers from 1 to samples"):
        load_suite(str(p))

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


def _gsm8k_frozen(data_dir, samples: int = 5):
    entry = SuiteEntry(name="gsm8k", task="gsm8k", num_fewshot=0, samples=samples, ks=[1, samples], temperature=0.7)
    frozen = LmEvalEngine().freeze(entry, str(data_dir), str(data_dir), limit=None)
    docs = [json.loads(line) for line in open(data_dir / "gsm8k" / "test.jsonl")]
    return entry, frozen, docs


def test_maj_at_k_votes_on_answers_as_the_task_normalises_them(data_dir):
    """'13.', '$13' and '13' are one answer under GSM8K's exact_match (regexes_to_ignore drops
    '$', ',' and a trailing '.'), so they are one vote: 3 votes for 13 beat 2 for 7."""
    from lm_eval.api.task import ConfigurableTask

    from evalkit.engines.lmeval.sampling import answer_equivalence

    entry, frozen, docs = _gsm8k_frozen(data_dir)
    cfg = frozen.configs["gsm8k"]
    same = answer_equivalence(ConfigurableTask(config=cfg), "exact_match")
    extracted = ["13.", "$13", "13", "7", "7"]
    assert _majority(extracted) == "7"  # raw-text votes: the old, wrong majority
    assert _majority(extracted, same) == "13."  # the class's earliest member, scores like "13"

    # end to end: flexible-extract pulls exactly these answers out of the responses (gold: 13)
    responses = ["The answer is 13.", "It costs $13", "13", "7", "7"]
    samples = [{"task": "gsm8k", "doc_id": 0, "doc": docs[0], "metrics": {}, "extra": {}, "responses": responses}]
    rows = {r["metric"]: r for r in sampling_metrics(entry, frozen.configs, {"gsm8k": samples})}
    assert samples[0]["extra"]["sampled_answers"]["flexible-extract"] == extracted
    assert samples[0]["metrics"]["maj@5,flexible-extract"] == 1.0
    assert rows["maj@5,flexible-extract"]["value"] == 1.0


def test_vote_normalisation_comes_from_the_task_config(data_dir):
    """Without the task's regexes_to_ignore the same answers are three different votes and 7 wins:
    the normalisation is read from metric_list, not hard-coded for GSM8K."""
    entry, frozen, docs = _gsm8k_frozen(data_dir)
    cfg = frozen.configs["gsm8k"]
    [em] = [m for m in cfg["metric_list"] if m["metric"] == "exact_match"]
    assert "\\$" in em["regexes_to_ignore"] and "\\.$" in em["regexes_to_ignore"]
    plain = {**cfg, "metric_list": [{**em, "regexes_to_ignore": []}]}
    responses = ["The answer is 13.", "It costs $13", "13", "7", "7"]
    samples = [{"task": "gsm8k", "doc_id": 0, "doc": docs[0], "metrics": {}, "extra": {}, "responses": responses}]
    sampling_metrics(entry, {"gsm8k": plain}, {"gsm8k": samples})
    assert samples[0]["metrics"]["maj@5,flexible-extract"] == 0.0
    # a config that drops '$' (and the gold's "... #### " prefix) but not a trailing '.' merges "$13"
    # with "13" and leaves "13." alone: 2 votes each for 13 and 7, and the earlier class wins
    only_dollar = {**cfg, "metric_list": [{**em, "regexes_to_ignore": ["\\$", "(?s).*#### "]}]}
    samples[0]["metrics"] = {}
    sampling_metrics(entry, {"gsm8k": only_dollar}, {"gsm8k": samples})
    assert samples[0]["metrics"]["maj@5,flexible-extract"] == 1.0

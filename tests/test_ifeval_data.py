"""Verifiable IFEval-style training prompts: built with lm-eval's classes, checked by its scorer, repaired."""

from __future__ import annotations

import json

import pytest

from trainloop.data.ifeval import REPAIRABLE, REPAIRS, TOPICS, build_prompt, check, repair, sample_prompts


def test_build_prompt_is_seeded_and_leaves_global_random_alone() -> None:
    import random

    from trainloop.data.ifeval import available_ids

    available_ids()  # importing lm-eval's IFEval module draws from `random` once; do it first
    random.seed(5)
    expected_next = random.random()
    random.seed(5)
    a = build_prompt(TOPICS[0], ["startend:end_checker", "detectable_content:postscript"], seed=11)
    assert random.random() == expected_next
    b = build_prompt(TOPICS[0], ["startend:end_checker", "detectable_content:postscript"], seed=11)
    assert a == b and a.prompt.startswith(TOPICS[0])
    assert a.kwargs[0]["end_phrase"] in a.prompt


def test_conflicting_or_unknown_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="conflict"):
        build_prompt("x", ["change_case:english_lowercase", "change_case:english_capital"], seed=0)
    with pytest.raises(ValueError, match="unknown"):
        build_prompt("x", ["nope:nothing"], seed=0)


def test_check_uses_the_official_scorer() -> None:
    p = build_prompt(TOPICS[1], ["change_case:english_lowercase", "startend:quotation"], seed=0)
    assert check(p, '"all lowercase here"') == [True, True]
    assert check(p, "Not Lowercase") == [False, False]


@pytest.mark.parametrize("iid", REPAIRABLE)
def test_every_repairable_instruction_is_repaired_and_verified(iid: str) -> None:
    p = build_prompt(TOPICS[2], [iid], seed=7)
    bad = "Interest grows on interest, year after year. Start early, save often."
    before = check(p, bad)
    if all(before):
        pytest.skip(f"{iid}: the fixture text already passes")
    fixed = repair(p, bad, before)
    assert fixed is not None and fixed.ok and fixed.origin == "repair" and fixed.repaired == [iid]
    assert check(p, fixed.response) == [True]


def test_repairs_compose_and_keep_case_constraints() -> None:
    ids = ["change_case:english_lowercase", "startend:end_checker", "detectable_format:title"]
    p = build_prompt(TOPICS[3], ids, seed=2)
    fixed = repair(p, "This Bottle Keeps Water Cold.")
    assert fixed is not None and fixed.ok
    assert fixed.response == fixed.response.lower()


def test_unrepairable_failures_give_none() -> None:
    p = build_prompt(TOPICS[4], ["length_constraints:number_words"], seed=1)
    assert "length_constraints:number_words" not in REPAIRS
    verdict = check(p, "x")
    if not all(verdict):
        assert repair(p, "x", verdict) is None
    assert repair(p, "x", [True]) is None  # nothing failed: nothing to repair


def test_sample_prompts_follow_the_failure_weights() -> None:
    ps = sample_prompts({"startend:quotation": 10, "punctuation:no_comma": 0, "bogus:id": 5}, 12, seed=3)
    assert len(ps) == 12 and len({p.key for p in ps}) == 12
    assert all(p.instruction_id_list == ("startend:quotation",) for p in ps)
    assert json.loads(json.dumps(ps[0].to_doc()))["instruction_id_list"] == ["startend:quotation"]
    with pytest.raises(ValueError, match="no buildable"):
        sample_prompts({"bogus:id": 1}, 1, seed=0)

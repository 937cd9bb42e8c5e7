"""FastLM (shared-prefix reuse + continuous batching) against lm-eval's stock HFLM.

A small random Llama in fp32 with the embedded model's real tokenizer: in fp32 the scheduler
changes nothing but rounding, so log-likelihoods must agree to ~1e-4 and greedy generations must
be identical. (bf16 agreement with the real model is measured by bench/compare_lmeval.py.)
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lm_eval.api.instance import Instance  # noqa: E402

from evalkit.models.fastlm.prefix import PrefixCache, merge_small_groups, plan_groups  # noqa: E402

SHOTS = "".join(
    f"Question: What is {a} plus {b}?\nA. {a + b}\nB. {a * b}\nAnswer: A\n\n" for a, b in [(2, 3), (4, 5), (7, 1), (6, 6)]
)
QUESTIONS = [f"Question: What is {a} plus {b}?\nA. {a * b}\nB. {a + b}\nAnswer:" for a, b in [(1, 8), (3, 3), (9, 2), (5, 4), (8, 8)]]


def test_plan_groups_shares_long_prefixes_only() -> None:
    shared = tuple(range(100))
    seqs = [shared + (200 + i, 300) for i in range(3)] + [(7, 8, 9), (7, 8, 10)]
    groups = plan_groups(seqs, [len(s) - 1 for s in seqs], min_prefix=32)
    by_len = {g.prefix_len: sorted(g.members) for g in groups}
    assert by_len == {100: [0, 1, 2], 0: [3, 4]}


def test_plan_groups_respects_limits() -> None:
    shared = tuple(range(60))
    seqs = [shared + (1,), shared + (2,)]
    groups = plan_groups(seqs, [40, 60], min_prefix=32)
    assert groups[0].prefix_len == 40  # the first row's scored positions start at 40


def test_small_groups_fold_into_one_decode_group() -> None:
    """k copies of each prompt form k-row groups; for decoding they are folded into one group that
    keeps only the prefix all of them share (here the 40-token preamble)."""
    pre = tuple(range(40))
    seqs = [pre + tuple(range(100 + 50 * p, 150 + 50 * p)) for p in range(3) for _ in range(4)]
    limits = [len(s) - 1 for s in seqs]
    groups = plan_groups(seqs, limits, min_prefix=32)
    assert sorted(len(g.members) for g in groups) == [4, 4, 4]
    merged = merge_small_groups(groups, seqs, limits, min_rows=8, min_prefix=32)
    assert len(merged) == 1 and merged[0].prefix_len == 40 and sorted(merged[0].members) == list(range(12))
    big = merge_small_groups(groups, seqs, limits, min_rows=4, min_prefix=32)
    assert big == groups  # groups that fill a batch keep their own (longer) prefix


def test_prefix_cache_returns_longest_cached_prefix() -> None:
    cache = PrefixCache(capacity=2)
    cache.put((1, 2, 3), [])
    cache.put((1, 2, 3, 4, 5), [])
    hit = cache.lookup((1, 2, 3, 4, 5, 6), min_len=2)
    assert hit is not None and hit[0] == 5
    assert cache.lookup((9, 9, 9), min_len=1) is None


@pytest.fixture(scope="module")
def pair():
    from lm_eval.models.huggingface import HFLM

    from evalkit.models.fastlm import FastLM
    from tests.tiny_llama import sharp_llama_with_smollm_vocab

    model, tok = sharp_llama_with_smollm_vocab()
    stock = HFLM(pretrained=model, tokenizer=tok, batch_size=3)
    fast = FastLM(pretrained=model, tokenizer=tok, batch_size=3, gen_batch=2, max_rows=3, min_prefix=16)
    return stock, fast


def _ll(ctx: str, cont: str, i: int) -> Instance:
    return Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont), idx=i)


def _gen(ctx: str, kwargs: dict, i: int) -> Instance:
    return Instance(request_type="generate_until", doc={}, arguments=(ctx, kwargs), idx=i)


def test_loglikelihood_matches_stock(pair) -> None:
    stock, fast = pair
    reqs = [_ll(SHOTS + q, c, i) for i, (q, c) in enumerate((q, c) for q in QUESTIONS for c in (" A", " B"))]
    reqs += [_ll("Unrelated short context:", " a multi token continuation", 90), _ll("Paris is", " in France.", 91)]
    want, got = stock.loglikelihood(reqs, disable_tqdm=True), fast.loglikelihood(reqs, disable_tqdm=True)
    for (lw, gw), (lg, gg) in zip(want, got, strict=True):
        assert lg == pytest.approx(lw, abs=2e-3)
        assert gg == gw
    assert fast.stats["prefix_computed"] + fast.stats["prefix_reused"] >= 1


def test_prefix_reused_across_calls(pair) -> None:
    _, fast = pair
    fast.prefixes.clear()
    before = fast.stats["prefix_computed"]
    for q in QUESTIONS[:2], QUESTIONS[2:]:
        fast.loglikelihood([_ll(SHOTS + x, " A", i) for i, x in enumerate(q)], disable_tqdm=True)
    assert fast.stats["prefix_computed"] - before == 1
    assert fast.stats["prefix_reused"] >= 1


@pytest.mark.parametrize("max_gen", [1, 9])
def test_greedy_generation_identical_with_refills(pair, max_gen: int) -> None:
    stock, fast = pair
    kwargs = {"until": ["\n\n", "Question:"], "max_gen_toks": max_gen, "do_sample": False}
    ctxs = [SHOTS + q for q in QUESTIONS] + ["Hello there", "A much longer unrelated context that shares nothing here"]
    reqs = [_gen(c, dict(kwargs), i) for i, c in enumerate(ctxs)]
    assert fast.generate_until(reqs, disable_tqdm=True) == stock.generate_until(reqs, disable_tqdm=True)


def test_greedy_generation_identical_for_repeated_contexts(pair) -> None:
    """The k-samples-per-prompt shape (each context repeated) decodes in one folded batch and still
    gives stock's greedy text."""
    stock, fast = pair
    kwargs = {"until": ["\n\n"], "max_gen_toks": 7, "do_sample": False}
    ctxs = [SHOTS + q for q in QUESTIONS[:3] for _ in range(3)]
    reqs = [_gen(c, dict(kwargs), i) for i, c in enumerate(ctxs)]
    assert fast.generate_until(reqs, disable_tqdm=True) == stock.generate_until(reqs, disable_tqdm=True)


def test_stop_sequence_ends_a_row_early(pair) -> None:
    stock, fast = pair
    probe = fast.generate_until([_gen("Hello there", {"until": [], "max_gen_toks": 6, "do_sample": False}, 0)],
                                disable_tqdm=True)[0]
    assert probe, "the random model generated nothing"
    stop = probe[len(probe) // 2 :][:2] or probe
    req = [_gen("Hello there", {"until": [stop], "max_gen_toks": 6, "do_sample": False}, 0)]
    out = fast.generate_until(req, disable_tqdm=True)
    assert out == stock.generate_until(req, disable_tqdm=True)
    assert stop not in out[0]


def test_sampling_is_seeded_and_unsupported_kwargs_fall_back(pair) -> None:
    stock, fast = pair
    sample = {"until": ["\n\n"], "max_gen_toks": 5, "do_sample": True, "temperature": 0.8, "top_p": 0.9}
    reqs = [_gen(SHOTS + q, dict(sample), i) for i, q in enumerate(QUESTIONS[:3])]
    torch.manual_seed(1)
    first = fast.generate_until(reqs, disable_tqdm=True)
    torch.manual_seed(1)
    assert fast.generate_until(reqs, disable_tqdm=True) == first
    beams = {"until": ["\n\n"], "max_gen_toks": 4, "do_sample": False, "num_beams": 1}
    reqs = [_gen(SHOTS + QUESTIONS[0], dict(beams), 0)]
    assert fast.generate_until(reqs, disable_tqdm=True) == stock.generate_until(reqs, disable_tqdm=True)


def test_answers_reach_the_cache_hook_as_rows_finish(pair) -> None:
    """PersistentLM commits from cache_hook reports; each generation must be reported once, when
    its row stops (before the call returns the rest), with the text the call returns."""
    _, fast = pair
    reports: list[tuple[str, str]] = []

    class Hook:
        def add_partial(self, attr, req, res):
            reports.append((req[0], res))

    kwargs = {"until": ["\n\n"], "max_gen_toks": 9, "do_sample": False}
    ctxs = [SHOTS + q for q in QUESTIONS] + ["Hello there"]
    reqs = [_gen(c, dict(kwargs), i) for i, c in enumerate(ctxs)]
    previous, fast.cache_hook = fast.cache_hook, Hook()
    try:
        out = fast.generate_until(reqs, disable_tqdm=True)
        assert sorted(reports) == sorted(zip(ctxs, out))
        reports.clear()
        lls = fast.loglikelihood([_ll(SHOTS + q, " A", i) for i, q in enumerate(QUESTIONS)], disable_tqdm=True)
        assert [r[1] for r in reports] and len(reports) == len(lls)
    finally:
        fast.cache_hook = previous

"""The CUDA path's device-agnostic pieces, run for real on CPU tensors.

What cannot run here: CUDA-graph capture/replay, ``torch.cuda.mem_get_info`` sizing, SDPA/bf16
numerics and any timing (``make gpu-check`` covers those on a GPU). Everything else — bucketing,
the slot cache's layout and indexing, the device-side stop state and every-N readback trimming,
and the whole slot decoder / batched scorer driven through ``FastLM(decode_path="static")`` — is
checked against the CPU path and stock HFLM on a small fp32 random Llama.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lm_eval.api.instance import Instance  # noqa: E402

from evalkit.models.fastlm.buckets import bucket_len, bucket_rows, floor_pow2, rows_for_memory  # noqa: E402
from evalkit.models.fastlm.cuda_decode import NO_TOKEN, DeviceState, advance, apply_history, readback  # noqa: E402
from evalkit.models.fastlm.static_cache import SlotKVCache, SlotTable  # noqa: E402

SHOTS = "".join(
    f"Question: What is {a} plus {b}?\nA. {a + b}\nB. {a * b}\nAnswer: A\n\n" for a, b in [(2, 3), (4, 5), (7, 1), (6, 6)]
)
QUESTIONS = [f"Question: What is {a} plus {b}?\nA. {a * b}\nB. {a + b}\nAnswer:" for a, b in [(1, 8), (3, 3), (9, 2), (5, 4), (8, 8)]]


# ---------------------------------------------------------------- buckets
def test_bucket_len_powers_of_two_then_multiples() -> None:
    assert [bucket_len(n) for n in (0, 1, 8, 9, 16, 17, 33, 64)] == [0, 8, 8, 16, 16, 32, 64, 64]
    assert [bucket_len(n) for n in (65, 128, 129, 130, 1000)] == [128, 128, 192, 192, 1024]
    assert bucket_len(100, multiple=32) == 128 and bucket_len(20, multiple=32) == 32
    for n in range(1, 600):
        b = bucket_len(n)
        assert b >= n and (b <= 64 or b % 64 == 0)
    assert len({bucket_len(n) for n in range(1, 1025)}) <= 4 + 16  # few distinct shapes


def test_bucket_rows_and_memory_cap() -> None:
    assert [bucket_rows(n) for n in (1, 2, 3, 5, 48, 64)] == [1, 2, 4, 8, 64, 64]
    assert bucket_rows(48, cap=48) == 48 and bucket_rows(0) == 0
    assert rows_for_memory(100, None, 0.9, 64) == 64  # CPU: no cap
    assert rows_for_memory(100, 1000, 0.5, 64) == 5
    assert rows_for_memory(10**9, 10, 0.9, 64) == 1  # never zero rows
    assert [floor_pow2(n) for n in (1, 2, 3, 5, 64, 100)] == [1, 2, 2, 4, 64, 64]


# ---------------------------------------------------------------- slot cache
def _kv(n: int, t: int, layers: int = 2, h: int = 2, d: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, h, t, d, generator=g), torch.randn(n, h, t, d, generator=g)) for _ in range(layers)]


def test_slot_cache_layout_write_read_and_reuse() -> None:
    kv = _kv(2, 5)
    cache = SlotKVCache.like(kv, rows=4, max_len=16)
    assert len(cache.layers) == 2
    for layer in cache.layers:  # one contiguous buffer per layer, [rows, heads, max_len, dim]
        assert layer.keys.shape == (4, 2, 16, 4) and layer.keys.is_contiguous() and layer.values.is_contiguous()
    table = SlotTable(4)
    slots = table.take([10, 11])
    assert slots == [0, 1]
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    cache.write_rows(torch.tensor(slots), kv, mask)
    for i, slot in enumerate(slots):
        got, m = cache.read_row(slot)
        assert torch.equal(m, mask[i])
        for (k, v), (gk, gv) in zip(kv, got, strict=True):
            assert torch.equal(gk, k[i]) and torch.equal(gv, v[i])
    assert cache.col.tolist() == [5, 5, 0, 0]
    # a decode step writes one column per row at that row's own write column
    cache.col.copy_(torch.tensor([5, 7, 0, 3]))
    new_k = torch.arange(4 * 2 * 1 * 4, dtype=torch.float32).view(4, 2, 1, 4)
    keys, values = cache.update(new_k, -new_k, 1)
    assert keys is cache.layers[1].keys and keys.shape == (4, 2, 16, 4)  # the whole buffer, no view/copy
    for r, c in enumerate([5, 7, 0, 3]):
        assert torch.equal(cache.layers[1].keys[r, :, c], new_k[r, :, 0])
        assert torch.equal(cache.layers[1].values[r, :, c], -new_k[r, :, 0])
    # multi-token writes land at col + i
    q = torch.ones(4, 2, 2, 4)
    cache.update(q * 3, q * 4, 0)
    assert torch.equal(cache.layers[0].keys[1, :, 8], torch.full((2, 4), 3.0))
    # free a slot and reuse it: new contents, mask cleared past the new prefill
    table.release(0)
    assert table.take([12]) == [0] and table.owner == [12, 11, None, None]
    kv2 = _kv(1, 3, seed=1)
    cache.write_rows(torch.tensor([0]), kv2, torch.tensor([[1, 1, 1]]))
    got, m = cache.read_row(0)
    assert m.tolist() == [1, 1, 1] and cache.mask[0].sum() == 3
    assert torch.equal(got[0][0], kv2[0][0][0])
    with pytest.raises(ValueError):
        table.take([1, 2, 3])
    with pytest.raises(ValueError):
        cache.write_rows(torch.tensor([2]), _kv(1, 17), torch.ones(1, 17, dtype=torch.long))


def test_attention_mask_4d_is_additive_and_static() -> None:
    cache = SlotKVCache.like(_kv(1, 1), rows=2, max_len=4)
    cache.mask.copy_(torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]]))
    m = cache.attention_mask_4d(torch.float32)
    assert m.shape == (2, 1, 1, 4)
    assert (m[0, 0, 0] == 0).tolist() == [True, False, True, False]
    assert m[0, 0, 0, 1] == torch.finfo(torch.float32).min
    assert SlotKVCache.bytes_per_row([(2, 4, 4)] * 3, 16, torch.bfloat16) == 3 * 2 * 8 * 16 * 2


# ---------------------------------------------------------------- device-side stop state
def test_advance_stops_on_eos_and_max_tokens_and_readback_trims() -> None:
    rows, every, max_gen = 3, 4, 3
    state = DeviceState.empty(rows, every, "cpu")
    col = torch.tensor([5, 5, 5])
    state.done[:] = torch.tensor([False, False, True])  # slot 2 is empty
    state.ngen[:] = 1  # the prefill produced the first token
    eos = torch.tensor([99])
    advance(state, col, torch.tensor([7, 99, 1]), eos, max_gen, max_col=7)
    assert state.done.tolist() == [False, True, True]  # row 1 hit EOS
    advance(state, col, torch.tensor([8, 4, 1]), eos, max_gen, max_col=7)
    assert state.done.tolist() == [True, True, True]  # row 0 reached max_gen (1 + 2)
    advance(state, col, torch.tensor([9, 4, 1]), eos, max_gen, max_col=7)
    assert state.ngen.tolist() == [3, 2, 1]
    assert col.tolist() == [7, 6, 5]  # rows advance only while emitting (clamped to max_col)
    assert state.tok.tolist() == [8, 99, 0] and state.pos.tolist() == [2, 1, 0]
    hist = readback(state)
    assert hist == [[7, 99, NO_TOKEN], [8, NO_TOKEN, NO_TOKEN], [NO_TOKEN, NO_TOKEN, NO_TOKEN]]
    assert int(state.t) == 0 and bool((state.hist == NO_TOKEN).all())
    outputs = [[1], [2], []]
    finished = apply_history(hist, [0, 1, None], outputs, lambda out: out[-1] == 99 or len(out) >= max_gen)
    assert finished == [0, 1] and outputs == [[1, 7, 8], [2, 99], []]


def test_apply_history_trims_after_host_stop_string() -> None:
    """Stop strings are a host check: tokens the device generated after the stop are dropped."""
    hist = [[1, 5], [2, 6], [3, 7], [4, 8]]
    outputs = [[], [0]]
    finished = apply_history(hist, [0, 1], outputs, lambda out: out[-2:] == [6, 7])
    assert finished == [1] and outputs == [[1, 2, 3, 4], [0, 5, 6, 7]]


def test_sliding_window_models_keep_the_cpu_decoder() -> None:
    from types import SimpleNamespace as NS

    from evalkit.models.fastlm.cuda_decode import supports_slot_decode

    base = dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64)
    assert supports_slot_decode(NS(config=NS(**base)))
    assert not supports_slot_decode(NS(config=NS(**base, sliding_window=4096)))
    assert supports_slot_decode(NS(config=NS(**base, sliding_window=4096, use_sliding_window=False)))
    assert not supports_slot_decode(NS(config=NS(**base, layer_types=["full_attention", "sliding_attention"])))
    assert not supports_slot_decode(NS(config=NS()))


# ---------------------------------------------------------------- end to end on CPU (static path forced)
@pytest.fixture(scope="module")
def trio():
    from lm_eval.models.huggingface import HFLM

    from evalkit.models.fastlm import FastLM
    from tests.tiny_llama import sharp_llama_with_smollm_vocab

    model, tok = sharp_llama_with_smollm_vocab()
    stock = HFLM(pretrained=model, tokenizer=tok, batch_size=3)
    fast = FastLM(pretrained=model, tokenizer=tok, batch_size=3, gen_batch=2, max_rows=3, min_prefix=16)
    static = FastLM(pretrained=model, tokenizer=tok, batch_size=3, gen_batch=4, max_rows=3, min_prefix=16,
                    decode_path="static", readback_every=3, len_bucket=16)
    return stock, fast, static


def _gen(ctx: str, kwargs: dict, i: int) -> Instance:
    return Instance(request_type="generate_until", doc={}, arguments=(ctx, kwargs), idx=i)


def _ll(ctx: str, cont: str, i: int) -> Instance:
    return Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont), idx=i)


def test_cuda_path_selected_only_on_cuda(trio) -> None:
    from evalkit.models.fastlm.backend import CPU_DEFAULTS

    _, fast, static = trio
    assert fast.device.type == "cpu" and not fast.static_path  # CPU: the existing path
    assert (fast.token_budget, fast.max_rows, fast.gen_batch) == (CPU_DEFAULTS[0], 3, 2)  # given ones kept
    plain = type(fast)(pretrained=fast.model, tokenizer=fast.tokenizer)
    assert (plain.token_budget, plain.max_rows, plain.gen_batch) == CPU_DEFAULTS == (4096, 64, 48)
    assert not plain.static_path
    assert static.static_path
    with pytest.raises(ValueError):
        type(fast)(pretrained=fast.model, tokenizer=fast.tokenizer, decode_path="bogus")


def test_cpu_path_never_touches_the_slot_decoder(trio, monkeypatch) -> None:
    import evalkit.models.fastlm.cuda_decode as cd

    _, fast, _ = trio

    def boom(*a, **k):
        raise AssertionError("slot decoder used on CPU")

    monkeypatch.setattr(cd.SlotDecoder, "run", boom)
    monkeypatch.setattr(type(fast), "_score_batch", boom)
    kwargs = {"until": ["\n\n"], "max_gen_toks": 3, "do_sample": False}
    fast.generate_until([_gen("Hello there", dict(kwargs), 0)], disable_tqdm=True)
    fast.loglikelihood([_ll("Paris is", " in France.", 0)], disable_tqdm=True)


@pytest.mark.parametrize("max_gen", [1, 9])
def test_static_path_greedy_generation_matches_stock(trio, max_gen: int) -> None:
    """The slot decoder (slot reuse, refills, readback every 3 steps, stop strings) gives stock's text."""
    stock, _, static = trio
    kwargs = {"until": ["\n\n", "Question:"], "max_gen_toks": max_gen, "do_sample": False}
    ctxs = [SHOTS + q for q in QUESTIONS] + ["Hello there", "A much longer unrelated context that shares nothing here"]
    ctxs += [SHOTS + q for q in QUESTIONS[:3] for _ in range(2)]
    reqs = [_gen(c, dict(kwargs), i) for i, c in enumerate(ctxs)]
    before = static.stats["slot_admissions"]
    assert static.generate_until(reqs, disable_tqdm=True) == stock.generate_until(reqs, disable_tqdm=True)
    assert static.stats["decode_readbacks"] >= (1 if max_gen > 1 else 0)
    assert static.stats["slot_admissions"] - before >= 3  # 12 rows through 4 slots: freed slots were refilled
    assert static.stats["cuda_graphs_captured"] == 0  # graphs are CUDA-only


def test_static_path_stop_string_trims(trio) -> None:
    stock, fast, static = trio
    probe = fast.generate_until([_gen("Hello there", {"until": [], "max_gen_toks": 8, "do_sample": False}, 0)],
                                disable_tqdm=True)[0]
    assert probe
    stop = probe[len(probe) // 2 :][:2] or probe
    req = [_gen("Hello there", {"until": [stop], "max_gen_toks": 8, "do_sample": False}, 0)]
    out = static.generate_until(req, disable_tqdm=True)
    assert out == stock.generate_until(req, disable_tqdm=True) and stop not in out[0]


def test_static_path_answers_reach_cache_hook_once(trio) -> None:
    _, _, static = trio
    reports: list[tuple[str, str]] = []

    class Hook:
        def add_partial(self, attr, req, res):
            reports.append((req[0], res))

    kwargs = {"until": ["\n\n"], "max_gen_toks": 7, "do_sample": False}
    ctxs = [SHOTS + q for q in QUESTIONS] + ["Hello there"]
    previous, static.cache_hook = static.cache_hook, Hook()
    try:
        out = static.generate_until([_gen(c, dict(kwargs), i) for i, c in enumerate(ctxs)], disable_tqdm=True)
        assert sorted(reports) == sorted(zip(ctxs, out))
    finally:
        static.cache_hook = previous


def test_static_path_sampling_is_seeded(trio) -> None:
    _, _, static = trio
    sample = {"until": ["\n\n"], "max_gen_toks": 5, "do_sample": True, "temperature": 0.8, "top_p": 0.9}
    reqs = [_gen(SHOTS + q, dict(sample), i) for i, q in enumerate(QUESTIONS[:3])]
    torch.manual_seed(1)
    first = static.generate_until(reqs, disable_tqdm=True)
    torch.manual_seed(1)
    assert static.generate_until(reqs, disable_tqdm=True) == first


def test_static_path_loglikelihood_matches_stock(trio) -> None:
    """Bucketed (left-padded) prefill and the one-readback batch scorer agree with stock HFLM."""
    stock, _, static = trio
    reqs = [_ll(SHOTS + q, c, i) for i, (q, c) in enumerate((q, c) for q in QUESTIONS for c in (" A", " B"))]
    reqs += [_ll("Unrelated short context:", " a multi token continuation", 90), _ll("Paris is", " in France.", 91)]
    want, got = stock.loglikelihood(reqs, disable_tqdm=True), static.loglikelihood(reqs, disable_tqdm=True)
    for (lw, gw), (lg, gg) in zip(want, got, strict=True):
        assert lg == pytest.approx(lw, abs=2e-3)
        assert gg == gw

"""KL(policy||ref): estimator formulas on hand-made distributions (fast), and on the embedded
model: KL to itself is 0, a trained LoRA adapter gives KL > 0, and the one-model adapter
on/off path equals the two-model path on the same sampled tokens (slow: loads the model)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from evalkit.analysis import kl as K
from evalkit.errors import EvalkitError
from evalkit.models import generate as G
from evalkit.store import RunStore
from evalkit.store.analyses import get_kl, list_kl, save_kl

PROMPTS = ["What is 2+2?", "Write a haiku about the sea.", "Name three colors."]
NEW_TOKENS = 16


# ------------------------------------------------------------------ fast: formulas
def test_kl_estimates_on_known_distributions():
    p, q = torch.tensor([[0.5, 0.5], [0.2, 0.8]]), torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    st = K.kl_estimates(p.log(), q.log(), [0, 1])
    assert st.kl[0] == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), abs=1e-6)
    assert st.kl[1] == pytest.approx(0.0, abs=1e-7)
    assert st.k1[0] == pytest.approx(math.log(0.5) - math.log(0.9), abs=1e-6)
    r = 0.9 / 0.5
    assert st.k3[0] == pytest.approx((r - 1) - math.log(r), abs=1e-6)
    assert st.k1[1] == pytest.approx(0.0, abs=1e-7) and st.k3[1] == pytest.approx(0.0, abs=1e-7)


def test_kl_estimates_handle_zero_probability_and_refuse_vocab_mismatch():
    logp = torch.tensor([[0.0, -math.inf]])  # p = [1, 0]
    logq = torch.tensor([[math.log(0.5), math.log(0.5)]])
    st = K.kl_estimates(logp, logq, [0])
    assert st.kl[0] == pytest.approx(math.log(2), abs=1e-6) and np.isfinite(st.k3).all()
    with pytest.raises(EvalkitError, match="different vocabularies"):
        K.kl_estimates(torch.zeros(1, 3), torch.zeros(1, 4), [0])


def test_summarize_means_are_per_token_overall_and_per_prompt():
    comps = [G.Completion("a", [1], [5, 6], "x"), G.Completion("b", [1], [7], "y")]
    stats = [K.TokenKL(np.array([0.1, 0.3]), np.array([0.2, 0.0]), np.array([0.0, 0.0])),
             K.TokenKL(np.array([0.5]), np.array([-0.1]), np.array([0.0]))]
    res = K.summarize(comps, stats, policy="p", ref="r")
    assert res.n_tokens == 3 and res.mean_kl == pytest.approx(0.3) and res.k1 == pytest.approx(0.1 / 3)
    assert [pp.kl for pp in res.per_prompt] == pytest.approx([0.2, 0.5])
    assert res.per_prompt[0].kl_sum == pytest.approx(0.4) and res.per_prompt[0].token_kl == pytest.approx([0.1, 0.3])


def test_kl_results_round_trip_through_the_store(tmp_path):
    comps = [G.Completion("a", [1], [5], "x")]
    res = K.summarize(comps, [K.TokenKL(np.array([0.25]), np.array([0.1]), np.array([0.01]))], policy="pol", ref="ref",
                      policy_hash="sha256:p", ref_hash="sha256:r", method="adapter", settings={"seed": 0})
    store = RunStore(str(tmp_path / "s.sqlite"))
    kid = save_kl(store, **res.store_fields())
    got = get_kl(store, kid)
    assert got["mean_kl"] == 0.25 and got["policy"] == "pol" and got["settings"]["method"] == "adapter"
    assert got["per_prompt"][0]["token_kl"] == [0.25]
    assert get_kl(store, "latest")["id"] == kid and list_kl(store)[0]["id"] == kid
    with pytest.raises(EvalkitError, match="not found"):
        get_kl(store, "nope")


# ------------------------------------------------------------------ fast: inputs
def test_load_prompts_txt_and_jsonl(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\nsecond\nthird\n")
    assert K.load_prompts(str(txt)) == ["first", "second", "third"]
    assert K.load_prompts(str(txt), limit=2) == ["first", "second"]
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"prompt": "a"}\n{"question": "b"}\n\n{"instruction": "c", "x": 1}\n')
    assert K.load_prompts(str(jl)) == ["a", "b", "c"]


def test_load_prompts_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(EvalkitError, match=r"bad.jsonl:2: no non-empty string field"):
        K.load_prompts(str(bad))
    bad.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(EvalkitError, match=r"bad.jsonl:2: not valid JSON"):
        K.load_prompts(str(bad))
    with pytest.raises(EvalkitError, match="not found"):
        K.load_prompts(str(tmp_path / "missing.txt"))
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(EvalkitError, match="no prompts"):
        K.load_prompts(str(empty))


class _FakeTok:
    def __init__(self, vocab: dict[str, int], split: str = " ") -> None:
        self.vocab, self.split = vocab, split

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(w) for w in text.split(self.split)]


def test_tokenizer_mismatch_is_refused():
    a = _FakeTok({"a": 0, "b": 1})
    K.check_same_tokenizer(a, _FakeTok({"a": 0, "b": 1}))
    with pytest.raises(EvalkitError, match="different tokenizers"):
        K.check_same_tokenizer(a, _FakeTok({"a": 0, "c": 1}))
    with pytest.raises(EvalkitError, match="tokenize the same text differently"):
        K.check_same_tokenizer(a, _FakeTok({"a": 0, "b": 1}, split=","))


# ------------------------------------------------- fast: models come from the handle
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    """A random 2-layer Llama over a character vocabulary, saved as a model folder (loads in ms)."""
    from tests.tiny_llama import tiny_llama

    model, tok = tiny_llama()
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


def test_kl_divergence_records_the_handles_resolved_settings(tiny_folder, monkeypatch):
    """Both models come from get_model; what KL records is what the policy's handle resolved."""
    from evalkit.models import handle as H

    made: list = []
    real = H.get_model

    def spy(model, **kw):
        h = real(model, **kw)
        made.append((kw.get("device"), kw.get("dtype"), h.device, h.dtype))
        return h

    monkeypatch.setattr(H, "get_model", spy)
    res = K.kl_divergence(tiny_folder, tiny_folder, PROMPTS[:2], max_new_tokens=4, device="cpu", dtype="bfloat16")
    assert res.method == "identical" and res.settings["dtype"] == "bfloat16" and res.settings["device"] == "cpu"
    assert made[0] == ("cpu", "bfloat16", "cpu", "bfloat16")
    assert all(m[2:] == ("cpu", "bfloat16") for m in made)  # the reference runs as the policy does
    assert res.n_tokens > 0 and abs(res.mean_kl) < 1e-6
    # an alias and "auto" are recorded resolved, never as typed
    assert K.kl_divergence(tiny_folder, tiny_folder, PROMPTS[:1], max_new_tokens=2, device="cpu",
                           dtype="bf16").settings["dtype"] == "bfloat16"
    auto = K.kl_divergence(tiny_folder, tiny_folder, PROMPTS[:1], max_new_tokens=2, device="cpu", dtype="auto")
    assert auto.settings["dtype"] == real(tiny_folder, device="cpu", dtype="auto").dtype
    # the default stays float32 (bf16 logits are noisier than a small adapter's KL)
    assert K.kl_divergence(tiny_folder, tiny_folder, PROMPTS[:1], max_new_tokens=2,
                           device="cpu").settings["dtype"] == "float32"


def test_sampling_moved_to_the_model_layer_unchanged(tiny_folder):
    """KL re-exports the model layer's sampler; seeds and batches decide the tokens."""
    from evalkit.models.handle import get_model

    assert K.sample_completions is G.sample_completions and K.Completion is G.Completion
    lm = get_model(tiny_folder, device="cpu", dtype="float32").hf
    a = G.sample_completions(lm.model, lm.tokenizer, PROMPTS, 6, seed=3, batch_size=2)
    b = G.sample_completions(lm.model, lm.tokenizer, PROMPTS, 6, seed=3, batch_size=2)
    assert [c.token_ids for c in a] == [c.token_ids for c in b] and [c.prompt for c in a] == PROMPTS
    assert all(1 <= len(c.token_ids) <= 6 for c in a)
    assert a[0].prompt_ids == G.encode_prompts(lm.tokenizer, PROMPTS[:1])[0]
    ids, mask, pos = G.left_pad([[5, 6, 7], [8]], 0, "cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert G.eos_ids(lm.model, lm.tokenizer) == {1} and G.pad_id(lm.tokenizer) == 0
    assert [(i, list(c)) for i, c in G.chunks([1, 2, 3], 2)] == [(0, [1, 2]), (1, [3])]
    greedy = G.generate_greedy(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=5, batch_size=2)
    assert len(greedy) == len(PROMPTS) and all(len(t) <= 5 for t in greedy)  # one char per token
    assert greedy == G.generate_greedy(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=5, batch_size=2)
    assert not lm.model.training


# ------------------------------------------------------------- slow: the real model
@pytest.fixture(scope="module")
def reference():
    from evalkit.models.handle import get_model

    return get_model("smollm2-135m", device="cpu", dtype="float32").hf


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory):
    """A LoRA (r=8, q_proj/v_proj) nudged by 4 Adam steps on two sentences, saved to disk."""
    from peft import LoraConfig, get_peft_model

    from evalkit.models.handle import get_model

    base = get_model("smollm2-135m", device="cpu", dtype="float32").hf
    torch.manual_seed(0)
    model = get_peft_model(base.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    tok = base.tokenizer
    enc = tok(["Purple elephants sing opera every Tuesday at noon.", "The harbour sky was the colour of a dead channel."],
              return_tensors="pt", padding=True)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for _ in range(4):
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(str(folder))
    return model, tok, str(folder)


@pytest.mark.slow
def test_kl_of_embedded_model_to_itself_is_zero(reference):
    comps = G.sample_completions(reference.model, reference.tokenizer, PROMPTS, NEW_TOKENS, seed=0)
    assert all(1 <= len(c.token_ids) <= NEW_TOKENS for c in comps)
    stats = K.score_kl(reference.model, comps, ref_model=reference.model)
    for s in stats:
        assert np.abs(s.kl).max() < 1e-6 and np.abs(s.k1).max() < 1e-6 and np.abs(s.k3).max() < 1e-6
    res = K.kl_divergence("smollm2-135m", "smollm2-135m", PROMPTS[:2], max_new_tokens=8, seed=1)
    assert res.method == "identical" and res.n_prompts == 2 and res.n_tokens > 0
    assert abs(res.mean_kl) < 1e-6 and abs(res.k1) < 1e-6 and abs(res.k3) < 1e-6


@pytest.mark.slow
def test_sampling_is_seeded(reference):
    a = G.sample_completions(reference.model, reference.tokenizer, PROMPTS[:2], 6, seed=3)
    b = G.sample_completions(reference.model, reference.tokenizer, PROMPTS[:2], 6, seed=3)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]


@pytest.mark.slow
def test_lora_adapter_kl_positive_and_fast_path_matches_two_models(reference, trained_adapter):
    from evalkit.models.handle import get_model

    policy, tok, folder = trained_adapter
    comps = G.sample_completions(policy, tok, PROMPTS, NEW_TOKENS, seed=0)
    fast = K.score_kl(policy, comps)  # one model: adapter on vs disable_adapter()
    merged = get_model(folder, device="cpu", dtype="float32").hf  # adapter merged
    general = K.score_kl(merged.model, comps, ref_model=reference.model)  # two models
    for f, g in zip(fast, general):
        assert f.kl.mean() > 0 and f.k3.mean() > 0
        np.testing.assert_allclose(f.kl, g.kl, atol=1e-4, rtol=0)
        np.testing.assert_allclose(f.k1, g.k1, atol=1e-4, rtol=0)
        np.testing.assert_allclose(f.k3, g.k3, atol=1e-4, rtol=0)
    low = K.summarize(comps, fast, policy=folder, ref="smollm2-135m")

    res = K.kl_divergence(folder, "smollm2-135m", PROMPTS, max_new_tokens=NEW_TOKENS, seed=0)
    assert res.method == "adapter" and res.mean_kl > 0 and res.k3 > 0
    assert [p.n_tokens for p in res.per_prompt] == [p.n_tokens for p in low.per_prompt]
    assert res.mean_kl == pytest.approx(low.mean_kl, abs=1e-4)
    print(f"\nadapter KL per token: exact {res.mean_kl:.4f} (stderr {res.kl_stderr:.4f}), k1 {res.k1:.4f}, "
          f"k3 {res.k3:.4f}; per prompt {[round(p.kl, 4) for p in res.per_prompt]}; {res.elapsed_s:.1f}s")


@pytest.mark.slow
def test_two_model_path_end_to_end(trained_adapter):
    """Policy = the base folder, reference = the adapter: not an adapter-on-its-base pair, so two models."""
    from evalkit.models.handle import get_model

    _, _, folder = trained_adapter
    base = get_model("smollm2-135m", device="cpu", dtype="float32").weights
    res = K.kl_divergence(base.source, folder, PROMPTS[:2], max_new_tokens=8, seed=0)
    assert res.method == "two-models" and res.mean_kl > 0 and res.n_prompts == 2
    assert res.policy_hash == base.weights_hash

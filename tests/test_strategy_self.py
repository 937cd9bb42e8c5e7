"""The ``self`` strategy (sample k, verify with the IFEval checker, repair) and chat sampling."""

from __future__ import annotations

import torch

from trainloop.strategies.sample import SamplingConfig, sample_chat
from trainloop.strategies.self_ifeval import SelfConfig, instruction_weights, self_ifeval


class FakeLM:
    """Answers in the requested case when the prompt says so, every other sample in shouting caps."""

    def __init__(self) -> None:
        self.calls = 0

    def apply_chat_template(self, msgs, add_generation_prompt=True):
        return f"<user>{msgs[-1]['content']}</user><assistant>"

    def generate_until(self, reqs, disable_tqdm=False):
        outs = []
        for r in reqs:
            self.calls += 1
            ctx, kw = r.args
            assert kw["do_sample"] and kw["max_gen_toks"] == 64
            outs.append("here is my answer in lowercase." if r.idx % 2 == 0 else "HERE IS MY ANSWER, LOUD.")
        return outs


def test_instruction_weights_from_cluster_tag_mix() -> None:
    w, src = instruction_weights([
        {"cluster_id": 3, "tag_mix": {"change_case:english_lowercase": {"n": 5, "failed": 4}, "punctuation:no_comma": {"n": 2, "failed": 0}}},
        {"cluster_id": 8, "tag_mix": {"change_case:english_lowercase": {"n": 3, "failed": 1}}},
        {"cluster_id": 9},
    ])
    assert w == {"change_case:english_lowercase": 5.0}
    assert src == {"change_case:english_lowercase": [3, 8]}


def test_self_ifeval_keeps_verified_samples_repairs_and_pairs() -> None:
    lm = FakeLM()
    cfg = SelfConfig(n_prompts=4, sampling=SamplingConfig(k=2, max_new_tokens=64), seed=1)
    data = self_ifeval(lm, {"change_case:english_lowercase": 1.0}, {"change_case:english_lowercase": [3]}, cfg,
                       eval_texts=[], embed=None)
    st = data.stats
    assert st["prompts"] == 4 and st["samples"] == 8 and st["passed"] == 4 and st["prompts_with_pass"] == 4
    assert st["repaired"] == 4 and lm.calls == 8
    sft = [(d, p) for k, d, p in data.examples if k == "sft"]
    dpo = [(d, p) for k, d, p in data.examples if k == "dpo"]
    grpo = [(d, p) for k, d, p in data.examples if k == "grpo"]
    assert len(sft) == 8 and len(dpo) == 8 and len(grpo) == 4
    assert grpo[0][0]["verifier"] == "ifeval" and grpo[0][0]["doc"]["instruction_id_list"] == [
        "change_case:english_lowercase"]
    assert {p["origin"] for _, p in sft} == {"sample", "repair"}
    repaired = next(d for d, p in sft if p["origin"] == "repair")
    assert repaired["messages"][-1]["content"] == "here is my answer, loud."
    assert all(p["clusters"] == [3] and p["strategy"] == "self" for _, p in sft + dpo)
    pair = next(d for d, p in dpo if p["origin"] == "pass-vs-fail")
    assert pair["chosen"][0]["content"].islower() and pair["rejected"][0]["content"].isupper()
    assert st["per_type"]["change_case:english_lowercase"] == {"pass": 4, "fail": 4}


def test_self_ifeval_drops_contaminated_prompts() -> None:
    lm = FakeLM()
    cfg = SelfConfig(n_prompts=3, sampling=SamplingConfig(k=2, max_new_tokens=64), seed=2)
    from trainloop.data.ifeval import sample_prompts

    leaked = sample_prompts({"change_case:english_lowercase": 1.0}, 3, seed=2)[0].prompt  # the same seeded prompt
    data = self_ifeval(lm, {"change_case:english_lowercase": 1.0}, {}, cfg, eval_texts=[leaked], embed=None)
    assert data.stats["decontam"]["ngram"] >= 1
    assert all(leaked not in d["messages"][0]["content"] for k, d, _ in data.examples if k == "sft")


def test_sample_chat_is_seeded_and_shaped() -> None:
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from evalkit.models.fastlm import FastLM
    from evalkit.models.loader import resolve_weights
    from evalkit.models.spec import parse_model

    tok = AutoTokenizer.from_pretrained(resolve_weights(parse_model("smollm2-135m")).source)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    lm = FastLM(pretrained=LlamaForCausalLM(cfg).eval(), tokenizer=tok, batch_size=4)
    assert isinstance(lm, HFLM)
    sc = SamplingConfig(k=3, max_new_tokens=8, seed=5)
    a = sample_chat(lm, ["Say hi.", "Count to three."], sc, disable_tqdm=True)
    b = sample_chat(lm, ["Say hi.", "Count to three."], sc, disable_tqdm=True)
    assert a == b and [len(x) for x in a] == [3, 3]
    assert len(set(a[0])) > 1  # samples of one prompt differ (temperature 0.8 on a random model)

"""GSM8K self (STaR on pool problems with known answers) and the judge strategy (round-robin pairwise
judging of candidates), with scripted models; then both through the loop's select step."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from evalkit.errors import EvalkitError
from evalkit.judge.verdict import SingleJudgment
from evalkit.store.sqlite import RunStore
from trainloop.config import from_mapping
from trainloop.data.pool import PoolExample
from trainloop.loop import run
from trainloop.record import store as ls
from trainloop.strategies.judge import JudgeStrategyConfig, judge_strategy, round_robin
from trainloop.strategies.sample import SamplingConfig
from trainloop.strategies.self_gsm8k import UNTIL, Gsm8kSelfConfig, final_answer, self_gsm8k
from trainloop.training.train import sft_rows, verifier_reward


@pytest.mark.parametrize("text, want", [
    ("She pays 3 * 4 = 12 dollars.\n#### 12", "12"),
    ("#### 1,234.", "1234"),
    ("so the answer is $18.00.", "18"),
    ("It costs 5 then 7 more: 12", "12"),
    ("no number here", None),
    ("#### -3", "-3"),
])
def test_final_answer_reads_like_lm_eval_filters(text, want) -> None:
    assert final_answer(text) == want


class MathLM:
    """Right answer on even sample indices, wrong on odd ones; records contexts and stops."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.reqs = []

    def generate_until(self, reqs, disable_tqdm=False):
        self.reqs += reqs
        outs = []
        for r in reqs:
            ctx, kw = r.args
            q = ctx.rsplit("Question: ", 1)[1].split("\n")[0]
            ans = self.answers[q]
            outs.append(f" Work it out. #### {ans}\n\n" if r.idx % 2 == 0 else f" I guess #### {int(ans) + 1}\n\n")
        return outs


POOL = [PoolExample(i + 1, f"What is {i} plus {i}?", f"{i} + {i} = {2 * i}\n#### {2 * i}") for i in range(1, 9)]


def test_self_gsm8k_keeps_correct_samples_pairs_and_reward() -> None:
    lm = MathLM({p.prompt: p.response.split("#### ")[1] for p in POOL})
    problems = [(p, {"cluster_id": 3, "source_row": p.row}) for p in POOL[:3]]
    problems.append((PoolExample(99, "A question with no answer?", "no final number"), {"cluster_id": 3, "source_row": 99}))
    cfg = Gsm8kSelfConfig(sampling=SamplingConfig(k=2, max_new_tokens=64), num_fewshot=2, seed=1)
    data = self_gsm8k(lm, problems, POOL, cfg)
    assert data.stats["no_answer"] == 1 and data.stats["samples"] == 6 and data.stats["correct"] == 3
    assert data.stats["problems_with_correct"] == 3
    ctx, kw = lm.reqs[0].args
    assert kw["until"] == list(UNTIL) and kw["do_sample"]
    assert ctx.count("Question: ") == 3 and ctx.endswith("Question: What is 1 plus 1?\nAnswer:")
    assert "What is 1 plus 1?\nAnswer: 1 + 1" not in ctx  # the problem is never its own few-shot example
    sft = [(d, p) for k, d, p in data.examples if k == "sft"]
    dpo = [(d, p) for k, d, p in data.examples if k == "dpo"]
    grpo = [d for k, d, _ in data.examples if k == "grpo"]
    assert len(sft) == 3 and len(dpo) == 3 and len(grpo) == 3
    assert sft[0][0] == {"prompt": "Question: What is 1 plus 1?\nAnswer:", "completion": " Work it out. #### 2"}
    assert sft[0][1]["source_row"] == 2 and sft[0][1]["answer"] == "2" and sft[0][1]["strategy"] == "self"
    assert dpo[0][0]["rejected"] == " I guess #### 3"
    assert sft_rows([d for d, _ in sft])[0]["prompt"] == "Question: What is 1 plus 1?\nAnswer:"
    reward = verifier_reward("gsm8k")
    assert reward(["p", "p"], ["so #### 2", "#### 3"], doc=[json.dumps(grpo[0]["doc"])] * 2) == [1.0, 0.0]


def test_sft_rows_refuse_mixed_chat_and_plain() -> None:
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    with pytest.raises(EvalkitError, match="mixes chat and plain"):
        sft_rows([chat, {"prompt": "Question: q\nAnswer:", "completion": " a"}])


class ScriptedJudge:
    """Prefers the longer answer (logistic in the length difference); no position bias."""

    name, identity, scoring = "scripted", "scripted:len", "scripted-v1"

    def __init__(self) -> None:
        self.requests = 0

    def judge(self, requests):
        self.requests += len(requests)
        out = []
        for r in requests:
            p = 1 / (1 + math.exp(-(len(r.first) - len(r.second)) / 4))
            out.append(SingleJudgment(verdict="A" if p >= 0.5 else "B", probs={"A": p, "B": 1 - p}))
        return out


def test_round_robin_scores_are_mean_win_probabilities(tmp_path) -> None:
    judge = ScriptedJudge()
    scores = round_robin(judge, "Say something.", ["a", "a much longer and better answer", "medium answer"])
    assert scores[1] > scores[2] > scores[0] and sum(scores) == pytest.approx(1.5)
    assert judge.requests == 6  # 3 pairs, both orders
    store = RunStore(str(tmp_path / "j.sqlite"))
    round_robin(judge, "Say something.", ["a", "bb"], store=store)
    round_robin(judge, "Say something.", ["a", "bb"], store=store)
    assert judge.requests == 8  # the second call was answered from the store's judgment cache


class ChatLM:
    def __init__(self, outs):
        self.outs = outs

    def apply_chat_template(self, msgs, add_generation_prompt=True):
        return msgs[-1]["content"]

    def generate_until(self, reqs, disable_tqdm=False):
        return [self.outs[r.idx % len(self.outs)] for r in reqs]


def test_judge_strategy_best_to_sft_best_vs_worst_to_dpo() -> None:
    lm = ChatLM(["ok", "a fairly complete answer to the question"])
    rows = [(PoolExample(1, "Explain tides.", "The moon's gravity pulls the oceans, making tides twice a day."), {"cluster_id": 2}),
            (PoolExample(2, "Name a colour.", "ok"), {"cluster_id": 2})]
    cfg = JudgeStrategyConfig(sampling=SamplingConfig(k=2, max_new_tokens=32), min_margin=0.2)
    data = judge_strategy(lm, ScriptedJudge(), rows, cfg)
    sft = [(d, p) for k, d, p in data.examples if k == "sft"]
    dpo = [(d, p) for k, d, p in data.examples if k == "dpo"]
    assert len(sft) == 2 and sft[0][0]["messages"][-1]["content"].startswith("The moon")
    assert sft[0][1]["origin"] == "pool-reference" and sft[0][1]["strategy"] == "judge"
    assert dpo[0][0]["chosen"][0]["content"].startswith("The moon") and dpo[0][0]["rejected"][0]["content"] == "ok"
    assert dpo[0][1]["origin"] == "pool-reference-vs-sample"
    assert data.stats["dpo"] == len(dpo) and data.stats["judge"]["requests"] == 8


# ---------------------------------------------------------------- through the loop's select step
def _hash_embed(texts):
    """Deterministic bag-of-words vectors: similar wording, similar vector."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, sum(map(ord, w)) % 64] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


def test_gsm8k_self_and_judge_through_the_loop(tmp_path) -> None:
    from tests.test_loop_steps import Fakes

    pool = tmp_path / "train.jsonl"
    pool.write_text("".join(json.dumps({"question": p.prompt, "answer": p.response}) + "\n" for p in POOL))
    f = Fakes()
    b = f.backends()
    b.embed = lambda: _hash_embed
    answers = {p.prompt: p.response.split("#### ")[1] for p in POOL}
    b.lm = lambda cfg, model: MathLM(answers)
    cfg = from_mapping({"model": "base", "suite": "fake", "targets": ("ifeval",), "rounds": 1, "self_k": 2, "data_per_cluster": 0, "allow_underpowered": True,
                        "strategies": "pool,judge", "skip_judge_check": True, "pool": str(pool), "judge": "scripted", "budget": 4,
                        "decontam_cosine": 2.0})
    chat = ChatLM(["short", "a longer sampled answer"])
    b.lm = lambda cfg, model: chat
    b.judge = lambda model: ScriptedJudge()
    run(cfg, RunStore(str(tmp_path / "a.sqlite")), reports_dir=str(tmp_path / "r"), backends=b, out=io.StringIO())
    ex = ls.get_examples(RunStore(str(tmp_path / "a.sqlite")), cfg.identity(), 1)
    rows = {s: {e["provenance"]["source_row"] for e in ex if e["provenance"]["strategy"] == s} for s in ("pool", "judge")}
    assert len(rows["pool"]) == 4 and len(rows["judge"]) == 4 and not rows["pool"] & rows["judge"]
    assert any(e["kind"] == "dpo" for e in ex if e["provenance"]["strategy"] == "judge")


def test_gsm8k_self_through_the_loop_trains_plain_text(tmp_path) -> None:
    from evalkit.analysis.clusters.result import Cluster, ClusterResult, Member
    from tests.test_loop_steps import Fakes

    class GsmFakes(Fakes):
        def eval(self, cfg, model, store):
            res = super().eval(cfg, model, store)
            rid = store.create_run(identity=f"g-{model}", model_spec=model, model_hash=f"g-{model}", suite_name=cfg.suite,
                                   suite_hash=self.hash, suite={}, settings={}, versions={})
            ok = "round" in model
            samples = [{"task": "gsm8k", "doc_id": i, "prompt": f"Question: What is {i} plus {i}?\nAnswer:",
                        "doc": {"question": f"What is {i} plus {i}?", "answer": f"#### {2 * i}"}, "responses": ["#### 0"],
                        "metrics": {"exact_match,strict-match": float(ok or i % 2)}} for i in range(20, 40)]
            store.start_entry(rid, "gsm8k", {})
            store.complete_entry(rid, "gsm8k", samples, [{"task": "gsm8k", "metric": "exact_match,strict-match",
                                                          "value": sum(s["metrics"]["exact_match,strict-match"] for s in samples) / 20}])
            store.finish_run(rid, {})
            return {**res, "run_id": rid}

        def cluster(self, store, run_id, targets, seed):
            fails = [s for s in store.samples(run_id, "gsm8k") if not s["metrics"]["exact_match,strict-match"]]
            members = [Member("gsm8k", "gsm8k", s["doc_id"], 0, True, 0.0, 0.0, 0.5) for s in fails]
            cl = Cluster(0, "gsm8k: addition", [], len(fails), len(fails), 1.0, 0.5, 2.0, {"gsm8k": len(fails)}, {}, [])
            return ClusterResult(run_id, seed, targets, "hdbscan", {}, None, [], 20, len(fails), {}, [cl], members,
                                 clustering_id=f"c-{run_id}")

    pool = tmp_path / "train.jsonl"
    pool.write_text("".join(json.dumps({"question": p.prompt, "answer": p.response}) + "\n" for p in POOL))
    f = GsmFakes()
    b = f.backends()
    b.embed = lambda: _hash_embed
    b.kl = lambda cfg, p, r, prompts, store: {"mean_kl": 0.01}
    b.lm = lambda cfg, model: MathLM({p.prompt: p.response.split("#### ")[1] for p in POOL})
    cfg = from_mapping({"model": "base", "suite": "fake", "targets": ("gsm8k",), "rounds": 1, "self_k": 2, "self_prompts": 3, "allow_underpowered": True,
                        "pool": str(pool), "strategies": "self", "decontam_cosine": 2.0})
    store = RunStore(str(tmp_path / "g.sqlite"))
    run(cfg, store, reports_dir=str(tmp_path / "r"), backends=b, out=io.StringIO())
    r = {(s["round"], s["step"]): s["result"] for s in ls.steps(store, cfg.identity())}
    st = r[(1, "select")]["strategies"]["self-gsm8k"]
    assert st["problems"] == 3 and st["correct"] == 3 and st["pool"]["selected"] == 3
    ex = ls.get_examples(store, cfg.identity(), 1)
    sft = [e["data"] for e in ex if e["kind"] == "sft"]
    assert sft and all(isinstance(d["prompt"], str) and d["prompt"].startswith("Question: ") for d in sft)
    assert f.trained[0][3] == "sft+dpo"

"""The whole loop with the heavy parts faked (evaluation, clustering, sampling LM, training, KL, merge):
every step, the store, gate decisions, promotion and rollback, the frozen-suite refusal and the report."""

from __future__ import annotations

import io
import os

import pytest

from evalkit.analysis.clusters.result import Cluster, ClusterResult, Member
from evalkit.store.sqlite import RunStore
from trainloop.config import LoopConfig, from_mapping, load_config
from trainloop.loop import run
from trainloop.record import store as ls
from trainloop.record.driver import StopLoop
from trainloop.steps import Backends

N = 100
LOWER = "change_case:english_lowercase"


class FakeLM:
    def apply_chat_template(self, msgs, add_generation_prompt=True):
        return msgs[-1]["content"]

    def generate_until(self, reqs, disable_tqdm=False):
        return ["fine, here it is." if r.idx % 2 == 0 else "Fine, Here It Is." for r in reqs]


def _quality(model: str) -> int:
    """IFEval items passed: the base passes 40; the round-1 adapter 70; a round-2 adapter no more."""
    return 70 if ("round-1" in model or "round-2" in model) else 40


class Fakes:
    def __init__(self) -> None:
        self.hash = "h0"
        self.evals: list[str] = []
        self.trained: list[tuple[str, int, int, str]] = []

    def eval(self, cfg, model, store):
        self.evals.append(model)
        rid = store.create_run(identity=f"id-{model}", model_spec=model, model_hash=f"mh-{model}", suite_name=cfg.suite,
                               suite_hash=self.hash, suite={}, settings={}, versions={})
        good = _quality(model)
        samples, n_ok = [], 0
        for i in range(N):
            ok = i < good
            n_ok += ok
            samples.append({"task": "ifeval", "doc_id": i, "prompt": f"Write about topic {i} in lowercase.",
                            "responses": ["x"], "doc": {"prompt": f"Write about topic {i} in lowercase.",
                                                        "instruction_id_list": [LOWER]},
                            "metrics": {"prompt_level_strict_acc": ok, "inst_level_strict_acc": [ok]}})
        store.start_entry(rid, "ifeval", {})
        store.complete_entry(rid, "ifeval", samples, [
            {"task": "ifeval", "metric": "prompt_level_strict_acc", "value": n_ok / N},
            {"task": "ifeval", "metric": "inst_level_strict_acc", "value": n_ok / N}])
        mm = [{"task": "mmlu", "doc_id": i, "prompt": f"Question {i}?", "doc": {"question": f"Question {i}?", "choices": list("abcd"),
                                                                             "answer": 0},
               "loglikelihoods": [-1.0, -2.0, -2.0, -2.0] if i % 4 else [-2.0, -1.0, -2.0, -2.0],
               "metrics": {"acc": bool(i % 4)}} for i in range(N)]
        store.start_entry(rid, "mmlu", {})
        store.complete_entry(rid, "mmlu", mm, [{"task": "mmlu", "metric": "acc", "value": 0.75}])
        store.finish_run(rid, {})
        return {"run_id": rid, "suite_hash": self.hash, "reused": False}

    def cluster(self, store, run_id, targets, seed):
        fails = [s for s in store.samples(run_id, "ifeval") if not s["metrics"]["prompt_level_strict_acc"]]
        members = [Member("ifeval", "ifeval", s["doc_id"], 0, True, 0.0, 0.0, s["doc_id"] / 100) for s in fails]
        cl = Cluster(0, "ifeval: lowercase", [], len(fails), len(fails), 1.0, 0.5, 2.0, {"ifeval": len(fails)},
                     {LOWER: {"n": len(fails), "failed": len(fails)}}, [])
        return ClusterResult(run_id, seed, targets, "hdbscan", {}, None, [], N, len(fails), {}, [cl], members,
                             clustering_id=f"c-{run_id}")

    def train(self, model_dir, sft, dpo, out_dir, cfg, grpo=()):
        os.makedirs(out_dir, exist_ok=True)
        self.trained.append((model_dir, len(sft), len(dpo), cfg.method))
        return {"adapter_dir": out_dir, "steps": 2, "seconds": 0.1, "examples": len(sft) + len(dpo), "method": cfg.method,
                "loss_curve": [{"stage": "sft", "step": 1, "loss": 2.0}, {"stage": "sft", "step": 2, "loss": 1.2}],
                "stages": []}

    def merge(self, base, adapter, out):
        os.makedirs(out, exist_ok=True)
        return out

    def backends(self) -> Backends:
        return Backends(eval=self.eval, suite_hash=lambda cfg: self.hash, lm=lambda cfg, m: FakeLM(),
                        model_dir=lambda m: m, kl=lambda cfg, p, r, prompts, store: {"mean_kl": 0.01, "n_prompts": len(prompts)},
                        train=self.train, merge=self.merge, embed=lambda: None, cluster=self.cluster,
                        split=lambda cfg: {})


def _cfg(**kw) -> LoopConfig:
    base = {"model": "base", "suite": "fake", "targets": ("ifeval",), "rounds": 2, "self_prompts": 6, "self_k": 2,
            "data_per_cluster": 0, "allow_underpowered": True}
    return from_mapping({**base, **kw})


def test_two_rounds_promote_then_roll_back_with_report(tmp_path) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"))
    f = Fakes()
    cfg = _cfg()
    outcome, report = run(cfg, store, reports_dir=str(tmp_path / "reports"), backends=f.backends(), out=io.StringIO())
    lid = cfg.identity()
    r = {(s["round"], s["step"]): s["result"] for s in ls.steps(store, lid)}
    assert r[(1, "promote")]["promoted"] is True
    assert r[(1, "gate")]["checks"][0]["passed"] and r[(1, "gate")]["checks"][0]["value"] == pytest.approx(0.30)
    assert r[(1, "gate")]["clusters"] == [{"cluster_id": 0, "label": "ifeval: lowercase", "before": 60, "after": 30}]
    assert r[(2, "promote")]["promoted"] is False and "does not clear" in r[(2, "promote")]["reasons"][0]
    assert r[(2, "clusters")] == {"skipped": "round rolled back: the current model's clusters stand"}
    # round 2 trains on round 1's merged model, with twice the data after no rollback yet (scale 1)
    assert f.trained[1][0].endswith(os.path.join("round-1", "model"))
    assert r[(2, "select")]["scale"] == 1 and r[(1, "select")]["strategies"]["self"]["prompts"] == 6
    assert f.trained[0][3] == "sft+dpo"  # auto: both kinds of data exist
    ex = ls.get_examples(store, lid, 1)
    assert ex and all(e["provenance"]["strategy"] == "self" and e["provenance"]["clusters"] == [0] for e in ex)
    html = open(report, encoding="utf-8").read()
    assert "promoted" in html and "rolled back" in html and "ifeval: lowercase" in html
    assert ls.get_loop(store, lid)["status"] == "done"

    # asking for a third round continues the same loop; a rollback doubles the next round's data
    f2_evals = len(f.evals)
    run(_cfg(rounds=3), store, reports_dir=str(tmp_path / "reports"), backends=f.backends(), out=io.StringIO())
    r = {(s["round"], s["step"]): s["result"] for s in ls.steps(store, lid)}
    assert r[(3, "select")]["scale"] == 2 and r[(3, "select")]["strategies"]["self"]["prompts"] == 12
    assert len(f.evals) == f2_evals + 1  # only round 3's candidate was evaluated


def test_changed_suite_stops_the_loop(tmp_path) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"))
    f = Fakes()
    run(_cfg(rounds=1), store, reports_dir=str(tmp_path / "r"), backends=f.backends(), out=io.StringIO())
    f.hash = "h1"  # someone edited the suite's configs or data
    with pytest.raises(StopLoop, match="changed since round 0"):
        run(_cfg(rounds=2), store, reports_dir=str(tmp_path / "r"), backends=f.backends(), out=io.StringIO())
    assert ls.get_loop(store, _cfg().identity())["status"] == "stopped"


def test_config_identity_and_validation(tmp_path) -> None:
    a, b = _cfg(rounds=1), _cfg(rounds=5)
    assert a.identity() == b.identity()  # more rounds continue the same loop
    assert _cfg(self_k=3).identity() != a.identity()
    with pytest.raises(Exception, match="METHOD must be"):
        _cfg(method="ppo")
    with pytest.raises(Exception, match="unknown key 'budgte'"):
        from_mapping({"budgte": 3})
    with pytest.raises(Exception, match="train: unknown key 'lr'"):
        from_mapping({"train": {"lr": 1}})
    p = tmp_path / "loop.yaml"
    p.write_text("targets: [ifeval, mmlu]\ntrain: {lora_r: 8, method: sft}\ngate: {tax_floor: -0.02}\n")
    cfg = load_config(str(p), {"rounds": 3, "method": None})
    assert cfg.targets == ("ifeval", "mmlu") and cfg.train.lora_r == 8 and cfg.gate.tax_floor == -0.02 and cfg.rounds == 3
    assert LoopConfig(targets=("gsm8k",), pool="p.jsonl").resolved_strategies() == ("self", "pool")
    assert LoopConfig(targets=("mmlu",), pool="p.jsonl", judge="j").resolved_strategies() == ("pool", "judge")
    assert LoopConfig(targets=("mmlu",)).resolved_strategies() == ()
    assert LoopConfig().resolved_strategies() == ("self",)


def test_teacher_strategy_samples_the_teacher_with_other_prompts(tmp_path) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"))
    f = Fakes()
    asked: list[str] = []
    b = f.backends()
    b.lm = lambda cfg, model: (asked.append(model), FakeLM())[1]
    cfg = _cfg(rounds=1, teacher="big-teacher")
    assert cfg.resolved_strategies() == ("self", "teacher")
    run(cfg, store, reports_dir=str(tmp_path / "r"), backends=b, out=io.StringIO())
    assert asked == ["base", "big-teacher"]
    ex = ls.get_examples(store, cfg.identity(), 1)
    by = {s: [e for e in ex if e["provenance"]["strategy"] == s] for s in ("self", "teacher")}
    assert by["self"] and by["teacher"]
    keys = lambda rows: {e["provenance"]["prompt_key"] for e in rows}  # noqa: E731
    assert not keys(by["self"]) & keys(by["teacher"])
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError, match="needs TEACHER"):
        run(_cfg(rounds=1, strategies="teacher"), RunStore(str(tmp_path / "other.sqlite")), reports_dir=str(tmp_path / "r"),
            backends=b, out=io.StringIO())

"""The loop that must earn a promotion: the selection/confirmation split, the power-plan refusal,
data at volume with a held-back fit check, the random control's equal-size rule, the training-
failure rule, export, and loop.json — with the heavy parts faked (no model runs)."""

from __future__ import annotations

import io
import json
import os

import pytest

from evalkit.analysis.clusters.embed import hashing_embed
from evalkit.analysis.clusters.result import Cluster, ClusterResult, Member
from evalkit.errors import EvalkitError
from evalkit.store.sqlite import RunStore
from evalkit.suite import load_suite
from evalkit.suite.freeze import freeze
from evalkit.suite.split import item_unit, split_ids
from trainloop.config import from_mapping
from trainloop.loop import run
from trainloop.record import store as ls
from trainloop.record.driver import StopLoop
from trainloop.steps import Backends
from trainloop.strategies.volume import VolumeConfig, clean_answer, fill, uniform_weights
from trainloop.training.fit import judge_fit, next_training
from trainloop.training.train import TrainConfig

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
LOWER = "change_case:english_lowercase"
N = 200


# ----------------------------------------------------------------------------------- the split
def test_split_is_stable_disjoint_and_independent_of_order() -> None:
    rows = [{"key": i, "prompt": f"p{i}"} for i in range(400)]
    a = split_ids(rows, 0.5)
    assert set(a["select"]).isdisjoint(a["confirm"]) and len(a["select"]) + len(a["confirm"]) == 400
    assert 150 < len(a["confirm"]) < 250
    assert split_ids(rows, 0.5) == a  # stable
    rev = split_ids(list(reversed(rows)), 0.5)  # an item's side depends on its content, not its position
    assert {rows[399 - i]["key"] for i in rev["confirm"]} == {rows[i]["key"] for i in a["confirm"]}
    assert item_unit(rows[0]) != item_unit(rows[0], salt="other")
    with pytest.raises(EvalkitError, match="between 0 and 1"):
        split_ids(rows, 1.5)


def _suite(tmp_path, fraction: float, limit: int | None = None) -> str:
    path = tmp_path / f"s{fraction}.yaml"
    lim = f"\n    limit: {limit}" if limit else ""
    path.write_text(f"name: s\nentries:\n  - name: ifeval\n    task: ifeval\n    confirm_fraction: {fraction}{lim}\n")
    return str(path)


def _ifeval_dir(tmp_path, n: int) -> str:
    d = tmp_path / "data" / "ifeval"
    d.mkdir(parents=True)
    rows = [{"key": i, "prompt": f"Write about topic {i}. Your answer must be in lowercase.",
             "instruction_id_list": [LOWER], "kwargs": [{}]} for i in range(n)]
    (d / "input_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(tmp_path / "data")


def test_split_recorded_in_the_frozen_suite(tmp_path) -> None:
    data = _ifeval_dir(tmp_path, 120)
    f5 = freeze(load_suite(_suite(tmp_path, 0.5)), data)
    f4 = freeze(load_suite(_suite(tmp_path, 0.4)), data)
    split = f5.entries[0].split["ifeval"]
    assert sorted(split["select"] + split["confirm"]) == list(range(120))
    assert f5.canonical()["entries"][0]["split"]["ifeval"] == split
    assert f5.suite_hash != f4.suite_hash  # a different split is a different suite
    with pytest.raises(EvalkitError, match="half has"):  # too few items on one side: one line
        freeze(load_suite(_suite(tmp_path, 0.5, limit=30)), data)


# ----------------------------------------------------------------------------- volume and fit
def test_clean_answer_cuts_loops_and_cut_off_sentences() -> None:
    assert clean_answer("One idea. Two ideas. One idea. Two ideas.") == "One idea. Two ideas."
    assert clean_answer("A full sentence. And a cut-off one that never") == "A full sentence."


class Gen:
    """Greedy 'model': a capitalised two-sentence answer (fails lowercase; the repair fixes it)."""

    def __init__(self) -> None:
        self.prompts = 0

    def __call__(self, lm, prompts, sc):
        self.prompts += len(prompts)
        assert sc.temperature == 0.0 and sc.k == 1
        return [[f"This Is An Answer About {p[:12]}. It Has Two Sentences."] for p in prompts]


def test_fill_meets_the_per_cluster_budget_and_holds_back() -> None:
    g = Gen()
    data = fill(None, {LOWER: 3.0}, {LOWER: [4]}, VolumeConfig(per_cluster=30, chunk=16, holdout=5, max_prompts=200),
                [], None, generate=g)
    assert data.stats["per_cluster"] == {"4": 30} and data.stats["status"] == "met"
    assert len(data.holdout) == 5 and all(h["base_pass"] is False for h in data.holdout)
    sft = [e for e in data.examples if e[0] == "sft"]
    assert len(sft) == 30 and all(e[1]["messages"][1]["content"] == e[1]["messages"][1]["content"].lower() for e in sft)
    held = {h["doc"]["prompt"] for h in data.holdout}
    assert not held & {e[1]["messages"][0]["content"] for e in sft}  # held-back prompts are never trained on
    short = fill(None, {LOWER: 1.0}, {LOWER: [4]}, VolumeConfig(per_cluster=500, chunk=10, holdout=0, max_prompts=20),
                 [], None, generate=Gen())
    assert short.stats["status"] == "exhausted" and short.stats["prompts"] == 20


def test_control_fill_has_exactly_the_targeted_count() -> None:
    w, src = uniform_weights()
    assert LOWER in w and set(x for v in src.values() for x in v) == {-1}
    lines: list[str] = []
    data = fill(None, {LOWER: 1.0}, {LOWER: [-1]}, VolumeConfig(per_cluster=0, chunk=8, holdout=0, max_prompts=100),
                [], None, strategy="control", target_total=13, generate=Gen(), progress=lines.append)
    assert sum(k == "sft" for k, _, _ in data.examples) == 13
    assert lines and "control data:" in lines[-1] and "13/13 examples" in lines[-1]  # labelled progress per chunk


def test_fit_rule_and_training_change() -> None:
    assert judge_fit([False] * 40, [True] * 20 + [False] * 20).ok
    bad = judge_fit([False] * 40, [True] * 3 + [False] * 37)
    assert not bad.ok and "TRAINING FAILURE" in bad.reason
    tc = TrainConfig(learning_rate=1e-3, epochs=2)
    assert next_training(tc, 0) == tc
    assert next_training(tc, 1).learning_rate == 2e-3 and next_training(tc, 1).epochs == 3
    assert next_training(tc, 5).learning_rate == 4e-3  # capped


# ------------------------------------------------------------------------- the loop, faked
class LowerLM:
    """Sampling model: answers in lowercase once trained ('adapter' in its name)."""

    def __init__(self, model: str) -> None:
        self.trained = "adapter" in model

    def apply_chat_template(self, msgs, add_generation_prompt=True):
        return msgs[-1]["content"]

    def generate_until(self, reqs, disable_tqdm=False):
        text = "Here Is A Short Answer About The Topic. It Ends Here With A Second Sentence."
        return [text.lower() if self.trained else text for _ in reqs]


class ConfirmFakes:
    def __init__(self, good_after: int = 150) -> None:
        self.good_after = good_after  # confirmation items a trained candidate passes
        self.evals: list[tuple[str, str]] = []
        self.trained: list[tuple[str, int, TrainConfig]] = []
        ids = list(range(N))
        self.split = {"ifeval": {"select": [["ifeval", i] for i in ids if i % 2 == 0],
                                 "confirm": [["ifeval", i] for i in ids if i % 2 == 1]}}

    def eval(self, cfg, model, store, part="all"):
        self.evals.append((model, part))
        rid = store.create_run(identity=f"id-{model}-{part}", model_spec=model, model_hash=f"mh-{model}", suite_name="s",
                               suite_hash="h", suite={}, settings={}, versions={})
        docs = [i for i in range(N) if part == "all" or i % 2 == 1]
        trained = "adapter" in model and "control" not in model
        samples = []
        for i in docs:
            ok = i < (self.good_after if trained else 20)
            samples.append({"task": "ifeval", "doc_id": i, "prompt": f"Write about topic {i} in lowercase.", "responses": ["x"],
                            "doc": {"prompt": f"Write about topic {i} in lowercase.", "instruction_id_list": [LOWER],
                                    "kwargs": [{}]},
                            "metrics": {"prompt_level_strict_acc": ok, "inst_level_strict_acc": [ok]}})
        store.start_entry(rid, "ifeval", {})
        store.complete_entry(rid, "ifeval", samples, [
            {"task": "ifeval", "metric": "prompt_level_strict_acc", "value": sum(s["metrics"]["prompt_level_strict_acc"] for s in samples) / len(samples)}])
        mc = [{"task": "arc_easy", "doc_id": i, "prompt": f"Q{i}?", "doc": {"question": f"Q{i}?"},
               "loglikelihoods": [-1.0, -2.0, -2.0, -2.0] if i % 3 else [-2.0, -1.0, -2.0, -2.0], "metrics": {"acc": bool(i % 3)}}
              for i in range(1500)]
        store.start_entry(rid, "arc_easy", {})
        store.complete_entry(rid, "arc_easy", mc, [{"task": "arc_easy", "metric": "acc", "value": 2 / 3}])
        store.finish_run(rid, {})
        return {"run_id": rid, "suite_hash": "h", "reused": False, "part": part}

    def cluster(self, store, run_id, targets, seed, exclude=None):
        fails = [s for s in store.samples(run_id, "ifeval") if not s["metrics"]["prompt_level_strict_acc"]
                 and ("ifeval", "ifeval", s["doc_id"]) not in (exclude or set())]
        assert all(s["doc_id"] % 2 == 0 for s in fails)  # the confirmation half never reaches the clusters
        members = [Member("ifeval", "ifeval", s["doc_id"], 0, True, 0.0, 0.0, 0.1) for s in fails]
        cl = Cluster(0, "ifeval: lowercase", [], len(fails), len(fails), 1.0, 0.5, 2.0, {"ifeval": len(fails)},
                     {LOWER: {"n": len(fails), "failed": len(fails)}}, [])
        return ClusterResult(run_id, seed, targets, "hdbscan", {}, None, [], N, len(fails), {}, [cl], members,
                             clustering_id=f"c-{run_id}")

    def train(self, model_dir, sft, dpo, out_dir, cfg, grpo=()):
        os.makedirs(out_dir, exist_ok=True)
        self.trained.append((out_dir, len(sft), cfg))
        return {"adapter_dir": out_dir, "steps": 3, "seconds": 0.1, "examples": len(sft), "method": cfg.method,
                "loss_curve": [{"stage": "sft", "step": i, "loss": 2.0 - i / 3} for i in range(3)], "stages": []}

    def merge(self, base, adapter, out):
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "config.json"), "w") as fh:
            fh.write("{}")
        return out

    def backends(self) -> Backends:
        return Backends(eval=self.eval, suite_hash=lambda cfg: "h", lm=lambda cfg, m: LowerLM(m), model_dir=lambda m: m,
                        kl=lambda cfg, p, r, prompts, store: {"mean_kl": 0.3, "n_prompts": len(prompts)},
                        train=self.train, merge=self.merge, embed=lambda: hashing_embed,
                        cluster=self.cluster, split=lambda cfg: self.split)


def _cfg(**kw):
    base = {"model": "base", "suite": "fake", "targets": ("ifeval",), "rounds": 1, "method": "sft",
            "data_per_cluster": 12, "fit_holdout": 6, "max_prompts": 60, "control": "random",
            "gate": {"primary": {"ifeval": "prompt_level_strict_acc", "arc_easy": "acc"}, "hoped_gain": 0.15}}
    return from_mapping({**base, **kw})


def test_loop_confirms_on_the_held_out_half_with_control_and_loop_json(tmp_path) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"))
    f = ConfirmFakes()
    cfg = _cfg(export_dir=str(tmp_path / "export"))
    out = io.StringIO()
    _, report = run(cfg, store, reports_dir=str(tmp_path / "reports"), backends=f.backends(), out=out)
    r = {(s["round"], s["step"]): s["result"] for s in ls.steps(store, cfg.identity())}
    assert "power plan" in out.getvalue() and r[(0, "plan")]["refusal"] is None
    # round 0 on everything, candidates (targeted, control) on the confirmation half only; the promoted
    # model is then evaluated in full so that its selection half can be clustered for the next round
    assert f.evals[0] == ("base", "all") and [p for _, p in f.evals[1:3]] == ["confirm", "confirm"]
    assert f.evals[3][1] == "all" and f.evals[3][0].endswith(os.path.join("round-1", "model")) and len(f.evals) == 4
    assert r[(1, "fit")]["ok"] and r[(1, "fit")]["cand_pass"] == 6
    assert r[(1, "control_select")]["sft"] == r[(1, "select")]["sft"] == 12  # the equal-size rule
    assert r[(1, "kl")]["prompts_kind"] in ("untargeted", "target")
    gate = r[(1, "gate")]
    assert gate["split"] == "confirm" and gate["promote"], gate["checks"]
    assert isinstance(gate["leak"], list) and isinstance(gate["control_leak"], list)
    target = gate["checks"][0]
    assert target["value"] == pytest.approx((75 - 10) / 100)  # odd ids < 150 vs < 20, on the confirmation half only
    tvc = {x["entry"]: x for x in gate["control"]["targeted_vs_control"]}
    assert tvc["ifeval"]["delta"] == pytest.approx(0.65) and tvc["ifeval"]["role"] == "target"
    assert tvc["arc_easy"]["delta"] == 0 and tvc["arc_easy"]["role"] == "tax"
    assert gate["clusters"][0]["split"] == "confirm" and gate["clusters"][0]["before"] == 90
    assert r[(1, "promote")]["promoted_model"] == os.path.abspath(tmp_path / "export" / "round-1")
    doc = json.load(open(os.path.join(os.path.dirname(report), "loop.json")))
    assert doc["schema"] == "evalkit.loop/1" and doc["promoted_model"].endswith("round-1")
    r1 = doc["rounds"][1]
    assert r1["decision"] == "promoted" and r1["train_fit"]["ok"] and r1["data"]["per_cluster"] == {"0": 12}
    g = {x["check"]: x for x in r1["gated"]}
    assert g["target"]["split"] == "confirm" and g["target"]["n"] == 100 and g["target"]["mde"] > 0
    assert g["tax"]["split"] == "all" and g["tax"]["n"] == 1500
    assert set(r1) >= {"kl", "control", "clusters", "train", "reasons"}
    html = open(report, encoding="utf-8").read()
    assert "Power plan" in html and "random-data control" in html and "learned its data" in html


def test_underpowered_loop_refuses_before_training(tmp_path) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"))
    f = ConfirmFakes()
    cfg = _cfg(gate={"primary": {"ifeval": "prompt_level_strict_acc", "arc_easy": "acc"}, "hoped_gain": 0.05})
    with pytest.raises(StopLoop, match=r"ifeval \(prompt_level_strict_acc\) can only detect .* needs n≥"):
        run(cfg, store, reports_dir=str(tmp_path / "r"), backends=f.backends(), out=io.StringIO())
    assert not f.trained and len(f.evals) == 1
    cfg2 = _cfg(gate={"primary": {"ifeval": "prompt_level_strict_acc", "arc_easy": "acc"}, "hoped_gain": 0.05},
                allow_underpowered=True, control=None)
    run(cfg2, store, reports_dir=str(tmp_path / "r"), backends=f.backends(), out=io.StringIO())
    assert f.trained


def test_training_failure_changes_the_next_round(tmp_path) -> None:
    class Stubborn(ConfirmFakes):
        def backends(self):
            b = super().backends()
            b.lm = lambda cfg, m: LowerLM("base")  # the adapter never learns lowercase
            return b

    store = RunStore(str(tmp_path / "runs.sqlite"))
    f = Stubborn(good_after=20)
    cfg = _cfg(rounds=2, control=None)
    run(cfg, store, reports_dir=str(tmp_path / "r"), backends=f.backends(), out=io.StringIO())
    r = {(s["round"], s["step"]): s["result"] for s in ls.steps(store, cfg.identity())}
    assert r[(1, "fit")]["ok"] is False and r[(1, "promote")]["promoted"] is False
    assert r[(2, "select")]["scale"] == 1  # a training failure does not double the data ...
    assert f.trained[1][2].learning_rate == 2 * f.trained[0][2].learning_rate  # ... it changes the step
    assert r[(2, "train")]["training_failures_before"] == 1


def test_bad_loop_input_is_one_line(tmp_path) -> None:
    with pytest.raises(EvalkitError, match="control must be 'random'"):
        _cfg(control="cluster")
    with pytest.raises(EvalkitError, match="have no such source"):
        _cfg(targets=("gsm8k",))
    with pytest.raises(EvalkitError, match="unknown key 'controll'"):
        from_mapping({"controll": "random"})
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "x").write_text("model")
    store = RunStore(str(tmp_path / "runs.sqlite"))
    with pytest.raises(EvalkitError, match="already exists"):
        run(_cfg(export_dir=str(tmp_path / "export")), store, reports_dir=str(tmp_path / "r"),
            backends=ConfirmFakes().backends(), out=io.StringIO())


def test_export_round_trips_as_a_model_value(tmp_path) -> None:
    from evalkit.models.spec import parse_model
    from trainloop.training.export import export_model

    from transformers import LlamaConfig, LlamaForCausalLM

    from evalkit.models.loader import resolve_weights

    src = tmp_path / "merged"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(src)
    dest = export_model(str(src), str(tmp_path / "out" / "round-1"))
    spec = parse_model(dest)  # the promoted_model value is a valid MODEL=
    assert spec.kind == "hf_dir" and spec.path == dest
    assert resolve_weights(spec).weights_hash == resolve_weights(parse_model(str(src))).weights_hash
    model = LlamaForCausalLM.from_pretrained(dest)
    assert model.config.hidden_size == 16
    with pytest.raises(EvalkitError, match="already exists"):
        export_model(str(src), dest)


def test_plan_marks_a_tax_entry_at_chance_as_no_signal() -> None:
    from trainloop.gate.decision import GateConfig
    from trainloop.gate.plan import format_plan, make_plan

    samples = [{"entry": "ifeval", "task": "ifeval", "doc_id": i, "metrics": {"prompt_level_strict_acc": i % 5 == 0}}
               for i in range(600)]
    samples += [{"entry": "wino", "task": "wino", "doc_id": i, "loglik": [-1.0, -1.1],
                 "metrics": {"acc": i % 2 == 0}} for i in range(1500)]  # 50% on two choices: chance
    samples += [{"entry": "arc", "task": "arc", "doc_id": i, "loglik": [-1.0] * 4,
                 "metrics": {"acc": i % 2 == 0}} for i in range(1500)]  # 50% on four choices: signal
    confirm = {"ifeval": {("ifeval", i) for i in range(300)}}
    plan = make_plan(samples, ["ifeval"], GateConfig(hoped_gain=0.12, primary={"ifeval": "prompt_level_strict_acc"}), confirm)
    rows = {r["entry"]: r for r in plan["rows"]}
    assert plan["no_signal"] == ["wino"] and rows["wino"]["chance"] == 0.5 and rows["arc"]["signal"] is True
    assert rows["ifeval"]["n"] == 300 and rows["ifeval"]["split"] == "confirm" and rows["arc"]["split"] == "all"
    assert plan["refusal"] is None and "no signal" in format_plan(plan)


def test_decontamination_checks_what_a_new_prompt_adds_not_the_instruction_template() -> None:
    from trainloop.data.ifeval import build_prompt

    template = build_prompt("x", [LOWER], seed=0).prompt[2:]  # lm-eval's fixed lowercase description
    eval_texts = ["Write a poem about the sea. " + template, "Describe how to organize a school science fair in detail please now."]
    data = fill(None, {LOWER: 1.0}, {LOWER: [0]}, VolumeConfig(per_cluster=10, chunk=20, holdout=0, max_prompts=40),
                eval_texts, None, generate=Gen())
    assert data.stats["sft"] == 10  # the shared template text alone drops nothing
    assert all("science fair" not in e[1]["messages"][0]["content"] for e in data.examples if e[0] == "sft")


def test_format_leak_counts_unasked_formats_paired() -> None:
    from trainloop.gate.leak import format_leak

    before = {i: ("A Normal Answer With Capitals Here.", {"punctuation:no_comma"} if i % 2 else set()) for i in range(40)}
    before[0] = ("a lowercase answer asked for by the prompt itself", {LOWER})
    after = {i: ("a normal answer that lost every capital letter." if i < 25 else before[i][0]) for i in range(40)}
    rows = {r["format"]: r for r in format_leak(before, after, {LOWER, "punctuation:no_comma"})}
    assert set(rows) == {LOWER}  # no_comma is not decidable without arguments
    r = rows[LOWER]
    assert r["n"] == 39 and r["before"] == 0 and r["after"] == 24 and r["leaks"] and r["p"] < 1e-6

"""The loop's steps: each reads what it needs from the store and returns a JSON-able result.

Round 0: ``suite`` (freeze and record the hash) → ``eval`` (the starting model) → ``clusters``.
Round r: ``suite`` (refuse a changed suite) → ``select`` (counterexample data, decontaminated) →
``train`` (LoRA adapter on the current model) → ``eval`` (the candidate, on the frozen suite) →
``kl`` (candidate vs the original reference) → ``gate`` → ``promote`` (merge, or roll back) →
``clusters`` (of the new model, only when promoted).

"Current model" is derived, never held in memory: the base, replaced by the merged model of
each promoted round (:func:`current`). The heavy parts (evaluation, training, KL, the LM used for
sampling, the embedder) are reached through :class:`Backends` so the fast tests can swap them
for fakes and still run every step, the store and the resume logic for real.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from evalkit.errors import EvalkitError
from trainloop.config import LoopConfig
from trainloop.driver import RoundContext, Step, StopLoop
from trainloop import store as ls


# ------------------------------------------------------------------------------------ backends
def _eval(cfg: LoopConfig, model: str, store: Any, part: str = "all") -> dict[str, Any]:
    from evalkit.runner import EvalSettings, run_suite

    res = run_suite(EvalSettings(model=model, suite=cfg.suite, data_dir=cfg.data_dir, limit=cfg.limit,
                                 batch_size=cfg.batch_size, part=part), store)  # same identity: reused
    return {"run_id": res.run_id, "suite_hash": res.suite_hash, "reused": res.reused, "part": part}


def _split(cfg: LoopConfig) -> dict[str, Any]:
    from trainloop.confirm import frozen_split

    return frozen_split(cfg)


def _suite_hash(cfg: LoopConfig) -> str:
    from evalkit.suite import load_suite
    from evalkit.suite.freeze import freeze

    return freeze(load_suite(cfg.suite), cfg.data_dir, cfg.limit).suite_hash


def _lm(cfg: LoopConfig, model: str) -> Any:
    from evalkit.models.lmeval_lm import build_lm
    from evalkit.models.spec import parse_model

    return build_lm(parse_model(model), batch_size=cfg.batch_size)


def _model_dir(model: str) -> str:
    from evalkit.models.loader import resolve_weights
    from evalkit.models.spec import parse_model

    w = resolve_weights(parse_model(model))
    if w.adapter:
        raise EvalkitError(f"loop: the current model '{model}' is an adapter; train on a merged model")
    return w.source


def _kl(cfg: LoopConfig, policy: str, ref: str, prompts: list[str], store: Any) -> dict[str, Any]:
    from evalkit.analysis.kl import kl_divergence
    from evalkit.store.analyses import save_kl

    res = kl_divergence(policy, ref, prompts, max_new_tokens=cfg.kl_max_new_tokens, seed=cfg.seed)
    kid = save_kl(store, **res.store_fields())
    return {"kl_id": kid, "mean_kl": res.mean_kl, "k1": res.k1, "k3": res.k3, "kl_stderr": res.kl_stderr,
            "n_tokens": res.n_tokens, "method": res.method}


def _train(model_dir: str, sft: list, dpo: list, out_dir: str, cfg: Any, grpo: list) -> dict[str, Any]:
    from trainloop.launch import train_launched

    return train_launched(model_dir, sft, dpo, out_dir, cfg, grpo).to_dict()


def _merge(base_dir: str, adapter_dir: str, out_dir: str) -> str:
    from trainloop.train import merge_adapter

    return merge_adapter(base_dir, adapter_dir, out_dir)


def _judge(model: str) -> Any:
    from evalkit.judge.base import load_judge

    return load_judge(model)


def _embed() -> Callable[..., Any]:
    from evalkit.analysis.clusters.embed import minilm_embed

    return minilm_embed


def _cluster(store: Any, run_id: str, targets: list[str], seed: int, exclude: Any = None) -> Any:
    from evalkit.analysis.clusters import cluster_run

    return cluster_run(store, run_id, tasks=targets, seed=seed, exclude=exclude)


@dataclass
class Backends:
    eval: Callable[[LoopConfig, str, Any], dict[str, Any]] = _eval
    suite_hash: Callable[[LoopConfig], str] = _suite_hash
    lm: Callable[[LoopConfig, str], Any] = _lm
    model_dir: Callable[[str], str] = _model_dir
    kl: Callable[[LoopConfig, str, str, list[str], Any], dict[str, Any]] = _kl
    train: Callable[..., dict[str, Any]] = _train
    merge: Callable[[str, str, str], str] = _merge
    embed: Callable[[], Callable[..., Any] | None] = _embed
    cluster: Callable[[Any, str, list[str], int], Any] = _cluster
    judge: Callable[[str], Any] = _judge
    split: Callable[[LoopConfig], dict[str, Any]] = _split  # entry -> {"select"/"confirm": [[task, doc_id]]}


# --------------------------------------------------------------------------------------- state
@dataclass
class Current:
    model: str
    run_id: str
    clusters_round: int
    rejected_since: int = 0  # rounds rejected since the last promotion (the next round asks for more data)
    misfit_since: int = 0  # of those, training failures (the next round changes the training instead)


def current(ctx: RoundContext, cfg: LoopConfig) -> Current:
    """The model a round starts from: the base, or the last promoted round's merged model."""
    st = Current(cfg.model, ctx.result("eval", 0)["run_id"], 0)
    for r in range(1, ctx.round):
        p = ctx.result("promote", r)
        if p.get("promoted"):
            st = Current(p["model"], p["run_id"], r)
        elif (ctx.maybe_result("fit", r) or {}).get("ok") is False:
            st.misfit_since += 1
        else:
            st.rejected_since += 1
    return st


def loop_dir(ctx: RoundContext) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(ctx.store.path)), "loops", ctx.loop_id)


def _samples_items(store: Any, run_id: str) -> list[Any]:
    from evalkit.analysis.clusters.texts import build_items

    return build_items(store.samples(run_id))[0]


def _entry_of(entry: str, targets: tuple[str, ...] | list[str]) -> bool:
    """A suite entry belongs to a TARGET when it is that name or one of its ``<name>_...`` parts."""
    return any(entry == t or entry.startswith(t + "_") for t in targets)


def _target_entries(cfg: LoopConfig, entries: list[str]) -> list[str]:
    out = [e for e in entries if _entry_of(e, cfg.targets)]
    missing = [t for t in cfg.targets if not any(_entry_of(e, (t,)) for e in entries)]
    if missing:
        raise EvalkitError(f"loop: TARGET {', '.join(missing)} is not an entry of suite '{cfg.suite}' "
                           f"(entries: {', '.join(entries)})")
    return out


# ------------------------------------------------------------------------------- data selection
class _Selection:
    """One round's counterexample data, strategy by strategy. Pool rows taken by one strategy are
    not offered to the next, so no row is trained on twice in a round."""

    def __init__(self, steps: LoopSteps, ctx: RoundContext, cl: dict[str, Any], targets: list[Any], scale: int,
                 eval_texts: list[str], decontam: Any) -> None:
        self.cfg, self.b, self.ctx, self.cl, self.targets = steps.cfg, steps.b, ctx, cl, targets
        self.scale, self.eval_texts, self.decontam = scale, eval_texts, decontam
        self.embed = steps.b.embed()
        self.examples: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.used_rows: set[int] = set()
        self._pool: list[Any] | None = None
        self._items: dict[Any, Any] | None = None

    def pool_rows(self, strategy: str) -> list[Any]:
        from trainloop.pool import read_pool

        if not self.cfg.pool:
            raise EvalkitError(f"loop: the '{strategy}' strategy needs POOL=<jsonl training pool>")
        if self.embed is None:
            raise EvalkitError(f"loop: the '{strategy}' strategy needs an embedder")
        if self._pool is None:
            self._pool = read_pool(self.cfg.pool)
        return self._pool

    def failing_texts(self, entries: tuple[str, ...] | None = None) -> dict[int, list[str]]:
        """Each target cluster's failing items as the model saw them, optionally of some entries only."""
        if self._items is None:
            st = current(self.ctx, self.cfg)
            self._items = {it.key: it for it in _samples_items(self.ctx.store, st.run_id)}
        items = self._items
        return {t.cluster_id: [items[k].instruction for k in t.keys
                               if k in items and (entries is None or _entry_of(items[k].entry, entries))]
                for t in self.targets}

    def nearest(self, strategy: str, budget: int, entries: tuple[str, ...] | None = None) -> tuple[list[Any], dict[str, Any]]:
        from trainloop.select_pool import select_from_pool

        pool = [e for e in self.pool_rows(strategy) if e.row not in self.used_rows]
        sel = select_from_pool(self.targets, self.failing_texts(entries), pool, budget, self.embed,
                               self.eval_texts, self.decontam)
        self.used_rows |= {s.example.row for s in sel.selected}
        picked = [(s.example, {**s.provenance(), "strategy": strategy}) for s in sel.selected]
        return picked, {"selected": len(sel.selected), "allotment": sel.allotment, "decontam": sel.dropped, "short": sel.short}

    def ifeval(self, name: str, model: str) -> dict[str, Any]:
        from trainloop.strategy_self import SelfConfig, instruction_weights, self_ifeval

        cfg, tag_mix = self.cfg, self.cl.get("tag_mix") or {}
        weights, sources = instruction_weights([{"cluster_id": t.cluster_id, "tag_mix": tag_mix.get(str(t.cluster_id))}
                                                for t in self.targets])
        if not weights:
            raise EvalkitError(f"loop: the '{name}' strategy needs IFEval instruction failures in the target clusters")
        # the teacher gets other prompts than the student (offset seed), so their data never overlaps
        seed = cfg.seed * 1000 + self.ctx.round + (500 if name == "teacher" else 0)
        sc = SelfConfig(n_prompts=cfg.self_prompts * self.scale, seed=seed, sampling=self._sampling(seed))
        data = self_ifeval(self.b.lm(cfg, model), weights, sources, sc, self.eval_texts, self.embed, self.decontam,
                           strategy=name)
        self.examples += data.examples
        return data.stats

    def gsm8k(self, model: str) -> dict[str, Any]:
        from trainloop.strategy_gsm8k import Gsm8kSelfConfig, self_gsm8k

        problems, picked = self.nearest("self", self.cfg.self_prompts * self.scale, self.cfg.gsm8k_targets())
        seed = self.cfg.seed * 1000 + self.ctx.round
        data = self_gsm8k(self.b.lm(self.cfg, model), problems, self.pool_rows("self"),
                          Gsm8kSelfConfig(sampling=self._sampling(seed), seed=seed))
        self.examples += data.examples
        return {**data.stats, "pool": picked}

    def pool(self) -> dict[str, Any]:
        problems, picked = self.nearest("pool", self.cfg.budget * self.scale)
        self.examples += [("sft", {"messages": ex.messages()}, prov) for ex, prov in problems]
        return picked

    def judge(self, model: str) -> dict[str, Any]:
        from trainloop.strategy_judge import JudgeStrategyConfig, judge_strategy

        from trainloop.judge_check import JudgeCheckConfig, require_judge

        if not self.cfg.judge:
            raise EvalkitError("loop: the 'judge' strategy needs JUDGE=<model> (judge: in the loop config)")
        judge = self.b.judge(self.cfg.judge)
        check = None
        if not self.cfg.skip_judge_check:  # a judge proves itself on human labels first (one line if not)
            check = require_judge(judge, self.ctx.store, JudgeCheckConfig(data_dir=self.cfg.data_dir))
        problems, picked = self.nearest("judge", self.cfg.budget * self.scale)
        seed = self.cfg.seed * 1000 + self.ctx.round
        other = self.b.lm(self.cfg, str(self.cfg.teacher)) if self.cfg.teacher else None
        data = judge_strategy(self.b.lm(self.cfg, model), judge, problems,
                              JudgeStrategyConfig(sampling=self._sampling(seed), min_margin=self.cfg.judge_margin),
                              other=other, store=self.ctx.store)
        self.examples += data.examples
        return {**data.stats, "pool": picked, "judge_check": check.to_dict() if check else "skipped"}

    def volume(self, name: str, model: str) -> dict[str, Any]:
        """IFEval data at volume (:mod:`trainloop.volume`): a budget per targeted cluster, greedy
        answers cleaned, verified or repaired; the first ``fit_holdout`` prompts held back."""
        from trainloop.strategy_self import instruction_weights
        from trainloop.volume import VolumeConfig, fill

        cfg, tag_mix = self.cfg, self.cl.get("tag_mix") or {}
        weights, sources = instruction_weights([{"cluster_id": t.cluster_id, "tag_mix": tag_mix.get(str(t.cluster_id))}
                                                for t in self.targets])
        if not weights:
            raise EvalkitError(f"loop: the '{name}' strategy needs IFEval instruction failures in the target clusters")
        vc = VolumeConfig(per_cluster=cfg.data_per_cluster * self.scale, max_prompts=cfg.max_prompts * self.scale,
                          holdout=cfg.fit_holdout, max_new_tokens=cfg.self_max_new_tokens,
                          seed=cfg.seed * 1000 + self.ctx.round, repairable_only=cfg.repairable_only)
        data = fill(self.b.lm(cfg, model), weights, sources, vc, self.eval_texts, self.embed, self.decontam, strategy=name,
                    progress=self.ctx.echo)
        self.examples += data.examples
        return {**data.stats, "holdout_docs": data.holdout}

    def _sampling(self, seed: int) -> Any:
        from trainloop.sample import SamplingConfig

        cfg = self.cfg
        return SamplingConfig(k=cfg.self_k, temperature=cfg.self_temperature, max_new_tokens=cfg.self_max_new_tokens,
                              seed=seed)


# ---------------------------------------------------------------------------------------- steps
class LoopSteps:
    def __init__(self, cfg: LoopConfig, backends: Backends | None = None) -> None:
        self.cfg = cfg
        self.b = backends or Backends()

    def for_round(self, rnd: int) -> list[Step]:
        if rnd == 0:
            return [Step("suite", self.suite), Step("eval", self.eval), Step("clusters", self.clusters),
                    Step("plan", self.plan)]
        no_control = self._skip_control
        return [Step("suite", self.suite), Step("select", self.select), Step("train", self.train),
                Step("fit", self.fit, skip=self._skip_fit), Step("eval", self.eval), Step("kl", self.kl),
                Step("control_select", self.control_select, skip=no_control),
                Step("control_train", self.control_train, skip=no_control),
                Step("control_eval", self.control_eval, skip=no_control),
                Step("gate", self.gate), Step("promote", self.promote),
                Step("clusters", self.clusters, skip=self._skip_clusters)]

    # -- suite: freeze, record in round 0, refuse changes later
    def suite(self, ctx: RoundContext) -> dict[str, Any]:
        h = self.b.suite_hash(self.cfg)
        loop = ls.get_loop(ctx.store, ctx.loop_id) or {}
        recorded = loop.get("suite_hash")
        if recorded is None:
            ls.set_loop(ctx.store, ctx.loop_id, suite_hash=h)
        elif recorded != h:
            raise StopLoop(f"suite '{self.cfg.suite}' changed since round 0 (hash {recorded} -> {h}): a loop measures "
                           "every round on one frozen suite; restore the suite (configs and data) or start a new loop")
        if ctx.round > 0:
            return {"suite_hash": h}
        split = self.b.split(self.cfg)
        return {"suite_hash": h, "split": split,
                "split_sizes": {e: {p: len(v) for p, v in halves.items()} for e, halves in split.items()}}

    def _split(self, ctx: RoundContext) -> dict[str, Any]:
        return ctx.result("suite", 0).get("split") or {}

    def _confirm(self, ctx: RoundContext) -> dict[str, set[tuple[str, int]]]:
        from trainloop.confirm import part_keys

        return part_keys(self._split(ctx), "confirm")

    # -- eval: the current model in round 0, the candidate adapter later
    def eval(self, ctx: RoundContext) -> dict[str, Any]:
        model = self.cfg.model if ctx.round == 0 else ctx.result("train")["adapter_dir"]
        return self._eval_model(ctx, model)

    def _eval_model(self, ctx: RoundContext, model: str) -> dict[str, Any]:
        # round 0 measures everything (the selection half feeds the clusters); a candidate only
        # needs the confirmation half of split entries (and every tax entry in full)
        if ctx.round > 0 and self._split(ctx):
            res = self.b.eval(self.cfg, model, ctx.store, "confirm")
        else:
            res = self.b.eval(self.cfg, model, ctx.store)
        recorded = (ls.get_loop(ctx.store, ctx.loop_id) or {}).get("suite_hash")
        if recorded and res["suite_hash"] != recorded:
            raise StopLoop(f"the evaluation ran on suite hash {res['suite_hash']}, not the loop's {recorded}")
        metrics = {(m["entry"], m["metric"]): m.get("value") for m in ctx.store.metrics(res["run_id"])
                   if m["entry"] == m["task"]}
        return {**res, "model": model, "metrics": [{"entry": e, "metric": k, "value": v} for (e, k), v in sorted(metrics.items())]}

    # -- clusters of the target entries' failures
    def clusters(self, ctx: RoundContext) -> dict[str, Any]:
        from trainloop.targets import rank_targets

        run_id = ctx.result("eval")["run_id"] if ctx.round == 0 else ctx.result("promote")["run_id"]
        if ctx.round > 0 and self._split(ctx):  # the promoted model's selection half was not evaluated yet
            run_id = self.b.eval(self.cfg, ctx.result("promote")["model"], ctx.store)["run_id"]
        entries = sorted({m["entry"] for m in ctx.store.metrics(run_id)})
        confirm = self._confirm(ctx)
        if confirm:  # selection half only: the confirmation half never chooses data
            result = self.b.cluster(ctx.store, run_id, _target_entries(self.cfg, entries), self.cfg.seed,
                                    exclude={(e, t, i) for e, keys in confirm.items() for t, i in keys})
        else:
            result = self.b.cluster(ctx.store, run_id, _target_entries(self.cfg, entries), self.cfg.seed)
        ranked = rank_targets(result, self.cfg.targets, top=self.cfg.top_clusters)
        return {"run_id": run_id, "clustering_id": result.clustering_id, "n_clusters": len(result.clusters),
                "n_failures": result.n_failures, "stability": result.stability,
                "targets": [{"cluster_id": t.cluster_id, "label": t.label, "failures": t.failures, "lift": t.lift,
                             "keys": [list(k) for k in t.keys]} for t in ranked],
                "tag_mix": {str(c.cluster_id): c.tag_mix for c in result.clusters},
                "members": [[m.entry, m.task, m.doc_id, m.cluster_id] for m in result.members]}

    def _skip_clusters(self, ctx: RoundContext) -> str | None:
        return None if ctx.result("promote").get("promoted") else "round rolled back: the current model's clusters stand"

    # -- select: counterexample data from the current clusters
    def select(self, ctx: RoundContext) -> dict[str, Any]:
        from trainloop.decontam import DecontamConfig
        from trainloop.targets import Target

        cfg, st = self.cfg, current(ctx, self.cfg)
        cl = ctx.result("clusters", st.clusters_round)
        targets = [Target(t["cluster_id"], t["label"], t["failures"], t["lift"], tuple(tuple(k) for k in t["keys"]))
                   for t in cl["targets"]]
        if not targets:
            raise StopLoop("no failing target samples left to learn from")
        strategies = cfg.resolved_strategies()
        if not strategies:
            raise EvalkitError("loop: no counterexample strategy applies (IFEval targets use 'self'; others need a "
                               "training pool: POOL=<jsonl>)")
        scale = 2 ** st.rejected_since  # a rolled-back round that fitted is retried with more data
        base_items = _samples_items(ctx.store, ctx.result("eval", 0)["run_id"])
        sel = _Selection(self, ctx, cl, targets, scale, list(dict.fromkeys(it.instruction for it in base_items if it.instruction)),
                         DecontamConfig(ngram=cfg.decontam_ngram, cosine=cfg.decontam_cosine))
        info: dict[str, Any] = {"targets": [t.cluster_id for t in targets], "scale": scale, "strategies": {}}
        if "self" in strategies and cfg.ifeval_targets():
            if cfg.data_per_cluster > 0:
                info["strategies"]["self"] = sel.volume("self", st.model)
            else:
                info["strategies"]["self"] = sel.ifeval("self", st.model)
        if "self" in strategies and cfg.gsm8k_targets():
            info["strategies"]["self-gsm8k"] = sel.gsm8k(st.model)
        if "self" in strategies and not (cfg.ifeval_targets() or cfg.gsm8k_targets()):
            raise EvalkitError("loop: the 'self' strategy needs a verifiable target (ifeval, or gsm8k with a POOL of "
                               "problems with known answers); use pool or judge for other targets")
        if "teacher" in strategies:
            if not cfg.teacher:
                raise EvalkitError("loop: the 'teacher' strategy needs TEACHER=<model> (teacher: in the loop config)")
            if not cfg.ifeval_targets():
                raise EvalkitError("loop: the 'teacher' strategy writes verifiable IFEval prompts; for other targets "
                                   "give the teacher to the judge strategy (JUDGE=... TEACHER=...)")
            info["strategies"]["teacher"] = sel.ifeval("teacher", str(cfg.teacher))
        if "pool" in strategies:
            info["strategies"]["pool"] = sel.pool()
        if "judge" in strategies:
            info["strategies"]["judge"] = sel.judge(st.model)
        examples = sel.examples
        ls.put_examples(ctx.store, ctx.loop_id, ctx.round, examples)
        info["sft"] = sum(k == "sft" for k, _, _ in examples)
        info["dpo"] = sum(k == "dpo" for k, _, _ in examples)
        info["grpo"] = sum(k == "grpo" for k, _, _ in examples)
        if not examples:
            raise EvalkitError("loop: selection produced no training examples (see the strategy counts in the store)")
        return info

    # -- plan: what the gate can detect at the frozen n (refuses an underpowered loop)
    def plan(self, ctx: RoundContext) -> dict[str, Any]:
        from trainloop.plan import format_plan, make_plan

        run_id = ctx.result("eval", 0)["run_id"]
        samples = ctx.store.samples(run_id)
        entries = sorted({s["entry"] for s in samples})
        plan = make_plan(samples, _target_entries(self.cfg, entries), self.cfg.gate, self._confirm(ctx))
        ctx.echo(format_plan(plan))
        if plan["refusal"] and not self.cfg.allow_underpowered:
            raise StopLoop(plan["refusal"])
        return {**plan, "overridden": bool(plan["refusal"])}

    # -- train a LoRA adapter on the current model
    def train(self, ctx: RoundContext) -> dict[str, Any]:
        from trainloop.fit import next_training

        cfg, st = self.cfg, current(ctx, self.cfg)
        rows = [r for r in ls.get_examples(ctx.store, ctx.loop_id, ctx.round)
                if r["provenance"].get("strategy") != "control"]
        sft = [r["data"] for r in rows if r["kind"] == "sft"]
        dpo = [r["data"] for r in rows if r["kind"] == "dpo"]
        grpo = [r["data"] for r in rows if r["kind"] == "grpo"]
        method = cfg.method
        if method == "auto":
            method = "sft+dpo" if dpo and sft else ("dpo" if dpo else "sft")
        # after training failures, the documented rule changes the step (trainloop.fit.next_training)
        tc = replace(next_training(cfg.train, st.misfit_since), method=method, seed=cfg.seed + ctx.round)
        out = os.path.join(loop_dir(ctx), f"round-{ctx.round}", "adapter")
        res = self.b.train(self.b.model_dir(st.model), sft, dpo, out, tc, grpo)
        return {**res, "method": method, "base_model": st.model, "train_config": asdict(tc),
                "training_failures_before": st.misfit_since}

    # -- fit: does the candidate follow its own held-back training prompts?
    def _skip_fit(self, ctx: RoundContext) -> str | None:
        held = ((ctx.result("select").get("strategies") or {}).get("self") or {}).get("holdout_docs")
        return None if held else "no held-back training prompts (fit_holdout: 0 or not the volume strategy)"

    def fit(self, ctx: RoundContext) -> dict[str, Any]:
        from trainloop.fit import judge_fit, score_holdout
        from trainloop.sample import SamplingConfig, sample_chat

        held = ctx.result("select")["strategies"]["self"]["holdout_docs"]
        lm = self.b.lm(self.cfg, ctx.result("train")["adapter_dir"])
        sc = SamplingConfig(k=1, temperature=0.0, max_new_tokens=self.cfg.self_max_new_tokens, seed=self.cfg.seed)
        outs = [o[0] if o else "" for o in sample_chat(lm, [h["doc"]["prompt"] for h in held], sc, disable_tqdm=True)]
        fit = judge_fit([bool(h["base_pass"]) for h in held], score_holdout(held, outs), self.cfg.fit_min_gain)
        ctx.echo(fit.reason)
        return {**fit.to_dict(), "examples": [{"prompt": h["doc"]["prompt"], "base": h["base_response"], "candidate": o}
                                             for h, o in list(zip(held, outs))[:5]]}

    # -- KL(candidate || original reference): on prompts the round did not target, where drift is a cost
    def _kl_prompts(self, ctx: RoundContext, n: int) -> tuple[list[str], str]:
        items = _samples_items(ctx.store, ctx.result("eval", 0)["run_id"])
        entries = sorted({it.entry for it in items})
        targets = set(_target_entries(self.cfg, entries))
        mine = [it for it in items if it.entry in targets and it.instruction]
        sel = ctx.result("select").get("strategies") or {}
        trained = {i for st in sel.values() if isinstance(st, dict) for h in st.get("holdout_docs", [])
                   for i in h["doc"]["instruction_id_list"]}
        trained |= {i for r in ls.get_examples(ctx.store, ctx.loop_id, ctx.round) for i in r["provenance"].get("instructions", [])}
        other = [it.instruction for it in mine if it.tags and not set(it.tags) & trained]
        if trained and len(other) >= min(n, 5):
            return other[:n], "untargeted"
        return [it.instruction for it in mine][:n], "target"

    def kl(self, ctx: RoundContext) -> dict[str, Any]:
        prompts, where = self._kl_prompts(ctx, self.cfg.kl_prompts)
        if not prompts:
            raise EvalkitError("loop: no target prompts to measure KL on")
        res = self.b.kl(self.cfg, ctx.result("train")["adapter_dir"], self.cfg.model, prompts, ctx.store)
        return {**res, "prompts_kind": where}

    # -- control: the same number of examples without cluster targeting, same training, same split
    def _skip_control(self, ctx: RoundContext) -> str | None:
        return None if self.cfg.control == "random" else "no control configured (control: random)"

    def control_select(self, ctx: RoundContext) -> dict[str, Any]:
        from trainloop.decontam import DecontamConfig
        from trainloop.volume import VolumeConfig, fill, uniform_weights

        cfg, st = self.cfg, current(ctx, self.cfg)
        rows = [r for r in ls.get_examples(ctx.store, ctx.loop_id, ctx.round) if r["provenance"].get("strategy") != "control"]
        n = sum(r["kind"] == "sft" for r in rows)
        if n == 0:
            raise EvalkitError("loop: the random control needs the targeted round's SFT data (none was selected)")
        base_items = _samples_items(ctx.store, ctx.result("eval", 0)["run_id"])
        weights, sources = uniform_weights()
        vc = VolumeConfig(per_cluster=0, max_prompts=cfg.max_prompts * 4, holdout=0,
                          max_new_tokens=cfg.self_max_new_tokens, seed=cfg.seed * 1000 + ctx.round + 777)
        data = fill(self.b.lm(cfg, st.model), weights, sources, vc,
                    list(dict.fromkeys(it.instruction for it in base_items if it.instruction)), self.b.embed(),
                    DecontamConfig(ngram=cfg.decontam_ngram, cosine=cfg.decontam_cosine), strategy="control",
                    target_total=n, progress=ctx.echo)
        sft = [e for e in data.examples if e[0] == "sft"][:n]  # the equal-size rule: exactly the targeted count
        ls.put_examples(ctx.store, ctx.loop_id, ctx.round,  # keep the targeted rows; replace any earlier control rows
                        [(r["kind"], r["data"], r["provenance"]) for r in rows] + sft)
        return {**{k: v for k, v in data.stats.items()}, "sft": len(sft), "targeted_sft": n, "equal": len(sft) == n}

    def control_train(self, ctx: RoundContext) -> dict[str, Any]:
        from trainloop.train import TrainConfig

        st = current(ctx, self.cfg)
        rows = [r["data"] for r in ls.get_examples(ctx.store, ctx.loop_id, ctx.round)
                if r["provenance"].get("strategy") == "control" and r["kind"] == "sft"]
        tconf = dict(ctx.result("train")["train_config"])
        tconf["method"] = "sft"
        if isinstance(tconf.get("target_modules"), list):
            tconf["target_modules"] = tuple(tconf["target_modules"])
        tc = TrainConfig(**tconf)
        out = os.path.join(loop_dir(ctx), f"round-{ctx.round}", "control-adapter")
        res = self.b.train(self.b.model_dir(st.model), rows, [], out, tc, [])
        return {**res, "method": "sft", "train_config": asdict(tc)}

    def control_eval(self, ctx: RoundContext) -> dict[str, Any]:
        return self._eval_model(ctx, ctx.result("control_train")["adapter_dir"])

    # -- gate: paired target gain (confirmation half), alignment tax, KL budget; clusters; the control
    def gate(self, ctx: RoundContext) -> dict[str, Any]:
        from evalkit.analysis.paired import compare_runs
        from evalkit.analysis.tax import alignment_tax
        from trainloop.gate import decide

        cfg, st = self.cfg, current(ctx, self.cfg)
        cand = ctx.result("eval")["run_id"]
        comp = compare_runs(ctx.store, st.run_id, cand, seed=cfg.seed)
        entries = comp.entries()
        targets = _target_entries(cfg, entries)
        plan = ctx.maybe_result("plan", 0) or {}
        mde = {r["entry"]: r["mde"] for r in plan.get("rows", [])}
        decision = decide(comp, targets, cfg.gate, ctx.result("kl").get("mean_kl"),
                          no_signal=plan.get("no_signal", []), mde=mde)
        tax = alignment_tax(comp, targets, primary=cfg.gate.primary)
        out = {"promote": decision.promote, **decision.to_dict(), "run_a": st.run_id, "run_b": cand,
               "tax": tax.to_dict(), "rows": [r.to_dict() for r in comp.rows if r.level == "entry"],
               "clusters": self._shrink(ctx, st, cand), "split": "confirm" if self._split(ctx) else "all"}
        ctl = ctx.maybe_result("control_eval")
        if ctl and ctl.get("run_id"):
            out["control"] = self._control_rows(ctx, st.run_id, cand, ctl["run_id"], targets)
        out["leak"] = self._leak(ctx, st.run_id, cand, targets)
        if ctl and ctl.get("run_id"):
            out["control_leak"] = self._leak(ctx, st.run_id, ctl["run_id"], targets)
        return out

    def _leak(self, ctx: RoundContext, current_run: str, cand: str, targets: list[str]) -> list[dict[str, Any]]:
        """Trained formats appearing in answers to target items that do not ask for them (reported)."""
        from trainloop.leak import leak_rows

        trained = {i for r in ls.get_examples(ctx.store, ctx.loop_id, ctx.round) if r["kind"] == "sft"
                   for i in r["provenance"].get("instructions", [])}
        return leak_rows(_samples_items(ctx.store, current_run), _samples_items(ctx.store, cand), trained,
                         lambda it: it.entry in targets)

    def _control_rows(self, ctx: RoundContext, current_run: str, cand: str, control: str,
                      targets: list[str]) -> dict[str, Any]:
        """Targeted vs random vs current, paired on the same items (the experiment that tells
        whether cluster targeting earns its keep)."""
        from evalkit.analysis.paired import compare_runs
        from evalkit.analysis.tax import primary_metric

        def rows(a: str, b: str) -> list[dict[str, Any]]:
            comp = compare_runs(ctx.store, a, b, seed=self.cfg.seed)
            out = []
            for e in comp.entries():
                avail = sorted({r.metric for r in comp.rows if r.entry == e and r.level == "entry"})
                try:
                    m = primary_metric(e, avail, self.cfg.gate.primary)
                except EvalkitError:
                    continue
                r = comp.row(e, m)
                if r is not None:
                    out.append({**r.to_dict(), "role": "target" if e in targets else "tax"})
            return out

        return {"run_id": control, "control_vs_current": rows(current_run, control),
                "targeted_vs_control": rows(control, cand)}

    def _shrink(self, ctx: RoundContext, st: Current, cand: str) -> list[dict[str, Any]]:
        """Each targeted cluster's failing items, re-scored on the candidate: how many still fail.
        With a split, counted on the confirmation half (items joined to clusters by nearest centroid)."""
        cl = ctx.result("clusters", st.clusters_round)
        after = {it.key: it.failed for it in _samples_items(ctx.store, cand)}
        confirm = self._confirm(ctx)
        if confirm and cl.get("members") is not None:
            from trainloop.confirm import confirm_shrink

            items = {it.key: it for it in _samples_items(ctx.store, st.run_id)}
            return confirm_shrink(cl["targets"], cl["members"], items, confirm, after, self.b.embed())
        out = []
        for t in cl["targets"]:
            keys = [tuple(k) for k in t["keys"]]
            still = sum(1 for k in keys if after.get(k, True))
            out.append({"cluster_id": t["cluster_id"], "label": t["label"], "before": len(keys), "after": still})
        return out

    # -- promote (merge the adapter into the next base) or roll back
    def promote(self, ctx: RoundContext) -> dict[str, Any]:
        st, gate = current(ctx, self.cfg), ctx.result("gate")
        if not gate["promote"]:
            failed = [c["reason"] for c in gate["checks"] if not c["passed"]]
            return {"promoted": False, "model": st.model, "run_id": st.run_id, "reasons": failed}
        adapter = ctx.result("train")["adapter_dir"]
        merged = self.b.merge(self.b.model_dir(st.model), adapter, os.path.join(loop_dir(ctx), f"round-{ctx.round}", "model"))
        exported = None
        if self.cfg.export_dir:
            from trainloop.export import export_model

            exported = export_model(merged, os.path.join(self.cfg.export_dir, f"round-{ctx.round}"))
        return {"promoted": True, "model": merged, "run_id": ctx.result("eval")["run_id"], "adapter": adapter,
                "promoted_model": os.path.abspath(exported or merged)}

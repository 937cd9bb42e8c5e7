"""The ``select`` step: counterexample training data from the current model's target clusters.

Each strategy that applies (``self``, ``teacher``, ``pool``, ``judge``; see
:meth:`LoopConfig.resolved_strategies <trainloop.config.LoopConfig.resolved_strategies>`) adds
its examples, decontaminated against the suite's eval items, and the round's data is stored
(with provenance) before training, so a resumed round trains on exactly the same rows. A round
rolled back although it fitted is retried with twice the data (``scale``).
"""

from __future__ import annotations

from typing import Any

from evalkit.errors import EvalkitError
from trainloop.record import store as ls
from trainloop.record.driver import RoundContext, StopLoop
from trainloop.steps.state import LoopEnv, current, entry_of, samples_items


def select(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    from trainloop.data.decontam import DecontamConfig
    from trainloop.strategies.targets import Target

    cfg, st = env.cfg, current(ctx, env.cfg)
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
    base_items = samples_items(ctx.store, ctx.result("eval", 0)["run_id"])
    sel = Selection(env, ctx, cl, targets, scale, list(dict.fromkeys(it.instruction for it in base_items if it.instruction)),
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


class Selection:
    """One round's counterexample data, strategy by strategy. Pool rows taken by one strategy are
    not offered to the next, so no row is trained on twice in a round."""

    def __init__(self, env: LoopEnv, ctx: RoundContext, cl: dict[str, Any], targets: list[Any], scale: int,
                 eval_texts: list[str], decontam: Any) -> None:
        self.cfg, self.b, self.ctx, self.cl, self.targets = env.cfg, env.b, ctx, cl, targets
        self.scale, self.eval_texts, self.decontam = scale, eval_texts, decontam
        self.embed = env.b.embed()
        self.examples: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.used_rows: set[int] = set()
        self._pool: list[Any] | None = None
        self._items: dict[Any, Any] | None = None

    def pool_rows(self, strategy: str) -> list[Any]:
        from trainloop.data.pool import read_pool

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
            self._items = {it.key: it for it in samples_items(self.ctx.store, st.run_id)}
        items = self._items
        return {t.cluster_id: [items[k].instruction for k in t.keys
                               if k in items and (entries is None or entry_of(items[k].entry, entries))]
                for t in self.targets}

    def nearest(self, strategy: str, budget: int, entries: tuple[str, ...] | None = None) -> tuple[list[Any], dict[str, Any]]:
        from trainloop.strategies.select_pool import select_from_pool

        pool = [e for e in self.pool_rows(strategy) if e.row not in self.used_rows]
        sel = select_from_pool(self.targets, self.failing_texts(entries), pool, budget, self.embed,
                               self.eval_texts, self.decontam)
        self.used_rows |= {s.example.row for s in sel.selected}
        picked = [(s.example, {**s.provenance(), "strategy": strategy}) for s in sel.selected]
        return picked, {"selected": len(sel.selected), "allotment": sel.allotment, "decontam": sel.dropped, "short": sel.short}

    def ifeval(self, name: str, model: str) -> dict[str, Any]:
        from trainloop.strategies.self_ifeval import SelfConfig, instruction_weights, self_ifeval

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
        from trainloop.strategies.self_gsm8k import Gsm8kSelfConfig, self_gsm8k

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
        from trainloop.gate.judge_check import JudgeCheckConfig, require_judge
        from trainloop.strategies.judge import JudgeStrategyConfig, judge_strategy

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
        """IFEval data at volume (:mod:`trainloop.strategies.volume`): a budget per targeted cluster, greedy
        answers cleaned, verified or repaired; the first ``fit_holdout`` prompts held back."""
        from trainloop.strategies.self_ifeval import instruction_weights
        from trainloop.strategies.volume import VolumeConfig, fill

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
        from trainloop.strategies.sample import SamplingConfig

        cfg = self.cfg
        return SamplingConfig(k=cfg.self_k, temperature=cfg.self_temperature, max_new_tokens=cfg.self_max_new_tokens,
                              seed=seed)

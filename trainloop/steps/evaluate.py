"""Measuring on the frozen suite: ``suite`` (freeze it, refuse changes), ``eval`` (the starting
model in round 0, the candidate later) and ``clusters`` (the current model's target failures).

Why the suite is checked every round: a loop compares rounds on one frozen suite; a changed
config or data file would make every later delta meaningless, so the step stops the loop
instead of measuring on something else.
"""

from __future__ import annotations

from typing import Any

from trainloop.record import store as ls
from trainloop.record.driver import RoundContext, StopLoop
from trainloop.steps.state import LoopEnv, confirm_keys, split_of, target_entries


# -- suite: freeze, record in round 0, refuse changes later
def suite(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    h = env.b.suite_hash(env.cfg)
    loop = ls.get_loop(ctx.store, ctx.loop_id) or {}
    recorded = loop.get("suite_hash")
    if recorded is None:
        ls.set_loop(ctx.store, ctx.loop_id, suite_hash=h)
    elif recorded != h:
        raise StopLoop(f"suite '{env.cfg.suite}' changed since round 0 (hash {recorded} -> {h}): a loop measures "
                       "every round on one frozen suite; restore the suite (configs and data) or start a new loop")
    if ctx.round > 0:
        return {"suite_hash": h}
    split = env.b.split(env.cfg)
    return {"suite_hash": h, "split": split,
            "split_sizes": {e: {p: len(v) for p, v in halves.items()} for e, halves in split.items()}}


# -- eval: the current model in round 0, the candidate adapter later
def evaluate(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    model = env.cfg.model if ctx.round == 0 else ctx.result("train")["adapter_dir"]
    return eval_model(env, ctx, model)


def eval_model(env: LoopEnv, ctx: RoundContext, model: str) -> dict[str, Any]:
    # round 0 measures everything (the selection half feeds the clusters); a candidate only
    # needs the confirmation half of split entries (and every tax entry in full)
    if ctx.round > 0 and split_of(ctx):
        res = env.b.eval(env.cfg, model, ctx.store, "confirm")
    else:
        res = env.b.eval(env.cfg, model, ctx.store)
    recorded = (ls.get_loop(ctx.store, ctx.loop_id) or {}).get("suite_hash")
    if recorded and res["suite_hash"] != recorded:
        raise StopLoop(f"the evaluation ran on suite hash {res['suite_hash']}, not the loop's {recorded}")
    metrics = {(m["entry"], m["metric"]): m.get("value") for m in ctx.store.metrics(res["run_id"])
               if m["entry"] == m["task"]}
    return {**res, "model": model, "metrics": [{"entry": e, "metric": k, "value": v} for (e, k), v in sorted(metrics.items())]}


# -- clusters of the target entries' failures
def clusters(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    from trainloop.strategies.targets import rank_targets

    cfg = env.cfg
    run_id = ctx.result("eval")["run_id"] if ctx.round == 0 else ctx.result("promote")["run_id"]
    if ctx.round > 0 and split_of(ctx):  # the promoted model's selection half was not evaluated yet
        run_id = env.b.eval(cfg, ctx.result("promote")["model"], ctx.store)["run_id"]
    entries = sorted({m["entry"] for m in ctx.store.metrics(run_id)})
    confirm = confirm_keys(ctx)
    if confirm:  # selection half only: the confirmation half never chooses data
        result = env.b.cluster(ctx.store, run_id, target_entries(cfg, entries), cfg.seed,
                               exclude={(e, t, i) for e, keys in confirm.items() for t, i in keys})
    else:
        result = env.b.cluster(ctx.store, run_id, target_entries(cfg, entries), cfg.seed)
    ranked = rank_targets(result, cfg.targets, top=cfg.top_clusters)
    return {"run_id": run_id, "clustering_id": result.clustering_id, "n_clusters": len(result.clusters),
            "n_failures": result.n_failures, "stability": result.stability,
            "targets": [{"cluster_id": t.cluster_id, "label": t.label, "failures": t.failures, "lift": t.lift,
                         "keys": [list(k) for k in t.keys]} for t in ranked],
            "tag_mix": {str(c.cluster_id): c.tag_mix for c in result.clusters},
            "members": [[m.entry, m.task, m.doc_id, m.cluster_id] for m in result.members]}


def skip_clusters(env: LoopEnv, ctx: RoundContext) -> str | None:
    return None if ctx.result("promote").get("promoted") else "round rolled back: the current model's clusters stand"

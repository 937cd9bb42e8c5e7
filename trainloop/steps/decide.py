"""The gate's side of a round: ``plan`` (round 0: what the gate can detect at the frozen n),
``gate`` (paired target gain on the confirmation half, alignment tax, KL budget; with the
clusters' shrinkage, the format leak and the control reported beside it) and ``promote``
(merge the adapter into the next base, or roll back).

Why the plan refuses before any training: a loop whose gate cannot see the hoped-for gain can
only be rolled back, at full cost (:mod:`trainloop.gate.plan`).
"""

from __future__ import annotations

import os
from typing import Any

from evalkit.errors import EvalkitError
from trainloop.record import store as ls
from trainloop.record.driver import RoundContext, StopLoop
from trainloop.steps.state import Current, LoopEnv, confirm_keys, current, loop_dir, samples_items, split_of, target_entries


# -- plan: what the gate can detect at the frozen n (refuses an underpowered loop)
def plan(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    from trainloop.gate.plan import format_plan, make_plan

    run_id = ctx.result("eval", 0)["run_id"]
    samples = ctx.store.samples(run_id)
    entries = sorted({s["entry"] for s in samples})
    power = make_plan(samples, target_entries(env.cfg, entries), env.cfg.gate, confirm_keys(ctx))
    ctx.echo(format_plan(power))
    if power["refusal"] and not env.cfg.allow_underpowered:
        raise StopLoop(power["refusal"])
    return {**power, "overridden": bool(power["refusal"])}


# -- gate: paired target gain (confirmation half), alignment tax, KL budget; clusters; the control
def gate(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    from evalkit import api
    from evalkit.analysis.tax import alignment_tax
    from trainloop.gate.decision import decide

    cfg, st = env.cfg, current(ctx, env.cfg)
    cand = ctx.result("eval")["run_id"]
    comp = api.compare(ctx.store, st.run_id, cand, seed=cfg.seed)
    entries = comp.entries()
    targets = target_entries(cfg, entries)
    power = ctx.maybe_result("plan", 0) or {}
    mde = {r["entry"]: r["mde"] for r in power.get("rows", [])}
    decision = decide(comp, targets, cfg.gate, ctx.result("kl").get("mean_kl"),
                      no_signal=power.get("no_signal", []), mde=mde)
    tax = alignment_tax(comp, targets, primary=cfg.gate.primary)
    out = {"promote": decision.promote, **decision.to_dict(), "run_a": st.run_id, "run_b": cand,
           "tax": tax.to_dict(), "rows": [r.to_dict() for r in comp.rows if r.level == "entry"],
           "clusters": _shrink(env, ctx, st, cand), "split": "confirm" if split_of(ctx) else "all"}
    ctl = ctx.maybe_result("control_eval")
    if ctl and ctl.get("run_id"):
        out["control"] = _control_rows(env, ctx, st.run_id, cand, ctl["run_id"], targets)
    out["leak"] = _leak(ctx, st.run_id, cand, targets)
    if ctl and ctl.get("run_id"):
        out["control_leak"] = _leak(ctx, st.run_id, ctl["run_id"], targets)
    return out


def _leak(ctx: RoundContext, current_run: str, cand: str, targets: list[str]) -> list[dict[str, Any]]:
    """Trained formats appearing in answers to target items that do not ask for them (reported)."""
    from trainloop.gate.leak import leak_rows

    trained = {i for r in ls.get_examples(ctx.store, ctx.loop_id, ctx.round) if r["kind"] == "sft"
               for i in r["provenance"].get("instructions", [])}
    return leak_rows(samples_items(ctx.store, current_run), samples_items(ctx.store, cand), trained,
                     lambda it: it.entry in targets)


def _control_rows(env: LoopEnv, ctx: RoundContext, current_run: str, cand: str, control: str,
                  targets: list[str]) -> dict[str, Any]:
    """Targeted vs random vs current, paired on the same items (the experiment that tells
    whether cluster targeting earns its keep)."""
    from evalkit import api
    from evalkit.analysis.tax import primary_metric

    def rows(a: str, b: str) -> list[dict[str, Any]]:
        comp = api.compare(ctx.store, a, b, seed=env.cfg.seed)
        out = []
        for e in comp.entries():
            avail = sorted({r.metric for r in comp.rows if r.entry == e and r.level == "entry"})
            try:
                m = primary_metric(e, avail, env.cfg.gate.primary)
            except EvalkitError:
                continue
            r = comp.row(e, m)
            if r is not None:
                out.append({**r.to_dict(), "role": "target" if e in targets else "tax"})
        return out

    return {"run_id": control, "control_vs_current": rows(current_run, control),
            "targeted_vs_control": rows(control, cand)}


def _shrink(env: LoopEnv, ctx: RoundContext, st: Current, cand: str) -> list[dict[str, Any]]:
    """Each targeted cluster's failing items, re-scored on the candidate: how many still fail.
    With a split, counted on the confirmation half (items joined to clusters by nearest centroid)."""
    cl = ctx.result("clusters", st.clusters_round)
    after = {it.key: it.failed for it in samples_items(ctx.store, cand)}
    confirm = confirm_keys(ctx)
    if confirm and cl.get("members") is not None:
        from trainloop.gate.confirm import confirm_shrink

        items = {it.key: it for it in samples_items(ctx.store, st.run_id)}
        return confirm_shrink(cl["targets"], cl["members"], items, confirm, after, env.b.embed())
    out = []
    for t in cl["targets"]:
        keys = [tuple(k) for k in t["keys"]]
        still = sum(1 for k in keys if after.get(k, True))
        out.append({"cluster_id": t["cluster_id"], "label": t["label"], "before": len(keys), "after": still})
    return out


# -- promote (merge the adapter into the next base) or roll back
def promote(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    st, verdict = current(ctx, env.cfg), ctx.result("gate")
    if not verdict["promote"]:
        failed = [c["reason"] for c in verdict["checks"] if not c["passed"]]
        return {"promoted": False, "model": st.model, "run_id": st.run_id, "reasons": failed}
    adapter = ctx.result("train")["adapter_dir"]
    merged = env.b.merge(env.b.model_dir(st.model), adapter, os.path.join(loop_dir(ctx), f"round-{ctx.round}", "model"))
    exported = None
    if env.cfg.export_dir:
        from trainloop.training.export import export_model

        exported = export_model(merged, os.path.join(env.cfg.export_dir, f"round-{ctx.round}"))
    return {"promoted": True, "model": merged, "run_id": ctx.result("eval")["run_id"], "adapter": adapter,
            "promoted_model": os.path.abspath(exported or merged)}

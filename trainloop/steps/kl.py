"""The ``kl`` step: KL(candidate || original reference) on prompts the round did not target.

Why untargeted prompts: on the targeted formats the candidate is *meant* to move, so drift there
is the goal, not a cost. KL is measured on target-entry prompts whose instructions the round did
not train (falling back to the target prompts when too few are left) and budgeted by the gate.
"""

from __future__ import annotations

from typing import Any

from evalkit.errors import EvalkitError
from trainloop.record import store as ls
from trainloop.record.driver import RoundContext
from trainloop.steps.state import LoopEnv, samples_items, target_entries


def kl_prompts(env: LoopEnv, ctx: RoundContext, n: int) -> tuple[list[str], str]:
    items = samples_items(ctx.store, ctx.result("eval", 0)["run_id"])
    entries = sorted({it.entry for it in items})
    targets = set(target_entries(env.cfg, entries))
    mine = [it for it in items if it.entry in targets and it.instruction]
    sel = ctx.result("select").get("strategies") or {}
    trained = {i for st in sel.values() if isinstance(st, dict) for h in st.get("holdout_docs", [])
               for i in h["doc"]["instruction_id_list"]}
    trained |= {i for r in ls.get_examples(ctx.store, ctx.loop_id, ctx.round) for i in r["provenance"].get("instructions", [])}
    other = [it.instruction for it in mine if it.tags and not set(it.tags) & trained]
    if trained and len(other) >= min(n, 5):
        return other[:n], "untargeted"
    return [it.instruction for it in mine][:n], "target"


def kl(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    prompts, where = kl_prompts(env, ctx, env.cfg.kl_prompts)
    if not prompts:
        raise EvalkitError("loop: no target prompts to measure KL on")
    res = env.b.kl(env.cfg, ctx.result("train")["adapter_dir"], env.cfg.model, prompts, ctx.store)
    return {**res, "prompts_kind": where}

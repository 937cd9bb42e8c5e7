"""Training a candidate: ``train`` (a LoRA adapter on the current model, on the round's stored
data) and ``fit`` (does the adapter follow its own held-back training prompts?).

Why ``fit`` runs before the costly re-evaluation: a round that never learned its data looks, on
the suite, the same as one that learned something useless. Telling them apart decides what the
next round changes: the training (after a training failure, :func:`trainloop.training.fit.next_training`)
or the amount of data (after a round that fitted but did not pass the gate).
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from typing import Any

from trainloop.record import store as ls
from trainloop.record.driver import RoundContext
from trainloop.steps.state import LoopEnv, current, loop_dir


# -- train a LoRA adapter on the current model
def train(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    from trainloop.training.fit import next_training

    cfg, st = env.cfg, current(ctx, env.cfg)
    rows = [r for r in ls.get_examples(ctx.store, ctx.loop_id, ctx.round)
            if r["provenance"].get("strategy") != "control"]
    sft = [r["data"] for r in rows if r["kind"] == "sft"]
    dpo = [r["data"] for r in rows if r["kind"] == "dpo"]
    grpo = [r["data"] for r in rows if r["kind"] == "grpo"]
    method = cfg.method
    if method == "auto":
        method = "sft+dpo" if dpo and sft else ("dpo" if dpo else "sft")
    # after training failures, the documented rule changes the step (trainloop.training.fit.next_training)
    tc = replace(next_training(cfg.train, st.misfit_since), method=method, seed=cfg.seed + ctx.round)
    out = os.path.join(loop_dir(ctx), f"round-{ctx.round}", "adapter")
    res = env.b.train(env.b.model_dir(st.model), sft, dpo, out, tc, grpo)
    return {**res, "method": method, "base_model": st.model, "train_config": asdict(tc),
            "training_failures_before": st.misfit_since}


# -- fit: does the candidate follow its own held-back training prompts?
def skip_fit(env: LoopEnv, ctx: RoundContext) -> str | None:
    held = ((ctx.result("select").get("strategies") or {}).get("self") or {}).get("holdout_docs")
    return None if held else "no held-back training prompts (fit_holdout: 0 or not the volume strategy)"


def fit(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    from trainloop.strategies.sample import SamplingConfig, sample_chat
    from trainloop.training.fit import judge_fit, score_holdout

    cfg = env.cfg
    held = ctx.result("select")["strategies"]["self"]["holdout_docs"]
    lm = env.b.lm(cfg, ctx.result("train")["adapter_dir"])
    sc = SamplingConfig(k=1, temperature=0.0, max_new_tokens=cfg.self_max_new_tokens, seed=cfg.seed)
    outs = [o[0] if o else "" for o in sample_chat(lm, [h["doc"]["prompt"] for h in held], sc, disable_tqdm=True)]
    result = judge_fit([bool(h["base_pass"]) for h in held], score_holdout(held, outs), cfg.fit_min_gain)
    ctx.echo(result.reason)
    return {**result.to_dict(), "examples": [{"prompt": h["doc"]["prompt"], "base": h["base_response"], "candidate": o}
                                             for h, o in list(zip(held, outs))[:5]]}

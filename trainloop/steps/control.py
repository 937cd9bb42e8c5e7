"""The random control (``control: random``): the same number of examples without cluster
targeting, the same training, the same split.

Why: a promoted round shows that *this* data helped, not that targeting the failure clusters
did; any same-size verified IFEval data might have helped as much. The control candidate is
compared with the targeted one, paired on the same items, in the gate step.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from evalkit.errors import EvalkitError
from trainloop.record import store as ls
from trainloop.record.driver import RoundContext
from trainloop.steps.evaluate import eval_model
from trainloop.steps.state import LoopEnv, current, loop_dir, samples_items


def skip(env: LoopEnv, ctx: RoundContext) -> str | None:
    return None if env.cfg.control == "random" else "no control configured (control: random)"


def select(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    from trainloop.data.decontam import DecontamConfig
    from trainloop.strategies.volume import VolumeConfig, fill, uniform_weights

    cfg, st = env.cfg, current(ctx, env.cfg)
    rows = [r for r in ls.get_examples(ctx.store, ctx.loop_id, ctx.round) if r["provenance"].get("strategy") != "control"]
    n = sum(r["kind"] == "sft" for r in rows)
    if n == 0:
        raise EvalkitError("loop: the random control needs the targeted round's SFT data (none was selected)")
    base_items = samples_items(ctx.store, ctx.result("eval", 0)["run_id"])
    weights, sources = uniform_weights()
    vc = VolumeConfig(per_cluster=0, max_prompts=cfg.max_prompts * 4, holdout=0,
                      max_new_tokens=cfg.self_max_new_tokens, seed=cfg.seed * 1000 + ctx.round + 777)
    data = fill(env.b.lm(cfg, st.model), weights, sources, vc,
                list(dict.fromkeys(it.instruction for it in base_items if it.instruction)), env.b.embed(),
                DecontamConfig(ngram=cfg.decontam_ngram, cosine=cfg.decontam_cosine), strategy="control",
                target_total=n, progress=ctx.echo)
    sft = [e for e in data.examples if e[0] == "sft"][:n]  # the equal-size rule: exactly the targeted count
    ls.put_examples(ctx.store, ctx.loop_id, ctx.round,  # keep the targeted rows; replace any earlier control rows
                    [(r["kind"], r["data"], r["provenance"]) for r in rows] + sft)
    return {**{k: v for k, v in data.stats.items()}, "sft": len(sft), "targeted_sft": n, "equal": len(sft) == n}


def train(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    from trainloop.training.train import TrainConfig

    st = current(ctx, env.cfg)
    rows = [r["data"] for r in ls.get_examples(ctx.store, ctx.loop_id, ctx.round)
            if r["provenance"].get("strategy") == "control" and r["kind"] == "sft"]
    tconf = dict(ctx.result("train")["train_config"])
    tconf["method"] = "sft"
    if isinstance(tconf.get("target_modules"), list):
        tconf["target_modules"] = tuple(tconf["target_modules"])
    tc = TrainConfig(**tconf)
    out = os.path.join(loop_dir(ctx), f"round-{ctx.round}", "control-adapter")
    res = env.b.train(env.b.model_dir(st.model), rows, [], out, tc, [])
    return {**res, "method": "sft", "train_config": asdict(tc)}


def evaluate(env: LoopEnv, ctx: RoundContext) -> dict[str, Any]:
    return eval_model(env, ctx, ctx.result("control_train")["adapter_dir"])

"""The loop's shape: which steps a round runs, in which order.

Round 0: ``suite`` (freeze and record the hash) → ``eval`` (the starting model) → ``clusters`` →
``plan`` (what the gate can detect; refuses an underpowered loop).
Round r: ``suite`` (refuse a changed suite) → ``select`` (counterexample data, decontaminated) →
``train`` (LoRA adapter on the current model) → ``fit`` (did it learn its held-back data?) →
``eval`` (the candidate, on the frozen suite) → ``kl`` (candidate vs the original reference) →
``control_select`` / ``control_train`` / ``control_eval`` (the random control, when configured) →
``gate`` → ``promote`` (merge, or roll back) → ``clusters`` (of the new model, only when promoted).

Each step is a function ``(env, ctx) -> JSON-able result`` in the module named after its stage
(:mod:`~trainloop.steps.evaluate`, :mod:`~trainloop.steps.select`, :mod:`~trainloop.steps.train`,
:mod:`~trainloop.steps.kl`, :mod:`~trainloop.steps.control`, :mod:`~trainloop.steps.decide`); it
reads what it needs from the store, so the driver can resume a round at any step.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from trainloop.config import LoopConfig
from trainloop.record.driver import RoundContext, Step
from trainloop.steps import control, decide, evaluate, kl, select, train
from trainloop.steps.backends import Backends
from trainloop.steps.state import LoopEnv

StepFn = Callable[[LoopEnv, RoundContext], dict[str, Any]]
SkipFn = Callable[[LoopEnv, RoundContext], str | None]


class LoopSteps:
    def __init__(self, cfg: LoopConfig, backends: Backends | None = None) -> None:
        self.cfg = cfg
        self.b = backends or Backends()
        self.env = LoopEnv(cfg, self.b)

    def _step(self, name: str, run: StepFn, skip: SkipFn | None = None) -> Step:
        return Step(name, partial(run, self.env), partial(skip, self.env) if skip else None)

    def for_round(self, rnd: int) -> list[Step]:
        s = self._step
        if rnd == 0:
            return [s("suite", evaluate.suite), s("eval", evaluate.evaluate), s("clusters", evaluate.clusters),
                    s("plan", decide.plan)]
        return [s("suite", evaluate.suite), s("select", select.select), s("train", train.train),
                s("fit", train.fit, train.skip_fit), s("eval", evaluate.evaluate), s("kl", kl.kl),
                s("control_select", control.select, control.skip),
                s("control_train", control.train, control.skip),
                s("control_eval", control.evaluate, control.skip),
                s("gate", decide.gate), s("promote", decide.promote),
                s("clusters", evaluate.clusters, evaluate.skip_clusters)]

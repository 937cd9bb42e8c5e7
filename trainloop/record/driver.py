"""Run a loop's rounds as stored, resumable steps.

Why a generic driver: what a step does (evaluate, cluster, select data, train, gate) lives in
small step functions; this module only decides *whether* a step runs. A step whose result is
stored is skipped, so ``make loop`` with the same arguments continues exactly where a crash or
``kill -9`` left it. Steps receive a :class:`RoundContext` and read earlier results through it
(from the store), so a resumed process sees the same inputs as an uninterrupted one.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from evalkit.errors import EvalkitError
from evalkit.store.sqlite import RunStore
from trainloop.record import store as ls


@dataclass
class RoundContext:
    store: RunStore
    loop_id: str
    round: int
    config: dict[str, Any]
    echo: Callable[[str], None]

    def result(self, step: str, rnd: int | None = None) -> dict[str, Any]:
        """A finished step's result (this round unless ``rnd``); a missing one is a driver bug."""
        r = self.round if rnd is None else rnd
        out = ls.step_result(self.store, self.loop_id, r, step)
        if out is None:
            raise EvalkitError(f"loop {self.loop_id}: round {r} step '{step}' has no stored result")
        return out

    def maybe_result(self, step: str, rnd: int | None = None) -> dict[str, Any] | None:
        return ls.step_result(self.store, self.loop_id, self.round if rnd is None else rnd, step)


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[RoundContext], dict[str, Any]]
    # skip (and store {"skipped": reason}) when this returns a reason; None means run
    skip: Callable[[RoundContext], str | None] | None = None


class StopLoop(EvalkitError):
    """A step's deliberate stop (e.g. the frozen suite changed): the loop ends as 'stopped'."""


@dataclass
class LoopOutcome:
    loop_id: str
    resumed: bool
    ran: list[tuple[int, str]] = field(default_factory=list)
    reused: list[tuple[int, str]] = field(default_factory=list)


def run_loop(store: RunStore, loop_id: str, config: dict[str, Any], rounds: int,
             steps_for: Callable[[int], Sequence[Step]], out: TextIO | None = None) -> LoopOutcome:
    """Rounds 0..``rounds`` (round 0 measures the starting model); each round's steps in order."""
    stream = out or sys.stderr

    def echo(msg: str) -> None:
        print(msg, file=stream, flush=True)

    resumed = ls.open_loop(store, loop_id, config)
    outcome = LoopOutcome(loop_id, resumed)
    echo(f"loop {loop_id}: {'resuming' if resumed else 'new'}, rounds 0..{rounds}")
    for rnd in range(rounds + 1):
        for step in steps_for(rnd):
            tag = f"[round {rnd}/{rounds}] {step.name}"
            if ls.step_result(store, loop_id, rnd, step.name) is not None:
                echo(f"{tag}: done earlier (stored)")
                outcome.reused.append((rnd, step.name))
                continue
            ctx = RoundContext(store, loop_id, rnd, config, echo)
            reason = step.skip(ctx) if step.skip else None
            ls.start_step(store, loop_id, rnd, step.name)
            if reason is not None:
                ls.finish_step(store, loop_id, rnd, step.name, {"skipped": reason})
                echo(f"{tag}: skipped ({reason})")
                continue
            echo(f"{tag} ...")
            t0 = time.perf_counter()
            try:
                result = step.run(ctx)
            except StopLoop as exc:
                ls.fail_step(store, loop_id, rnd, step.name, str(exc))
                ls.set_loop(store, loop_id, status="stopped")
                raise
            except EvalkitError as exc:
                ls.fail_step(store, loop_id, rnd, step.name, str(exc))
                ls.set_loop(store, loop_id, status="failed")
                raise
            except Exception as exc:  # a bug or a library error: keep the traceback in the store
                ls.fail_step(store, loop_id, rnd, step.name, traceback.format_exc())
                ls.set_loop(store, loop_id, status="failed")
                raise EvalkitError(f"loop {loop_id}: round {rnd} step '{step.name}' failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
            result = dict(result or {})
            result.setdefault("seconds", round(time.perf_counter() - t0, 2))
            ls.finish_step(store, loop_id, rnd, step.name, result)
            outcome.ran.append((rnd, step.name))
            echo(f"{tag}: done in {result['seconds']:.1f} s")
    ls.set_loop(store, loop_id, status="done")
    return outcome

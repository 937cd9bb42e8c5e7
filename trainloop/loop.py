"""``evalkit loop``: run (or resume) a loop and write its report.

The one entry point the command line (:mod:`trainloop.cli`) and the tests call: it checks what
costs nothing to check before round 0, hands the round structure (:mod:`trainloop.steps`) to the
resumable driver (:mod:`trainloop.record.driver`), and writes the report from the store.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from evalkit.store.sqlite import RunStore
from trainloop.config import LoopConfig
from trainloop.record.driver import LoopOutcome, run_loop
from trainloop.steps import Backends, LoopSteps


def run(cfg: LoopConfig, store: RunStore, reports_dir: str = "reports", backends: Backends | None = None,
        out: TextIO | None = None) -> tuple[LoopOutcome, str]:
    """Rounds 0..cfg.rounds, resumable; returns the outcome and the loop report's path."""
    from trainloop.record import store as ls
    from trainloop.record.report import write_loop_report
    from trainloop.training.export import check_export_dir

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ls.ensure_tables(store)
    if ls.get_loop(store, cfg.identity()) is None:  # bad input costs nothing: checked before round 0
        check_export_dir(cfg.export_dir)
    steps = LoopSteps(cfg, backends)
    outcome = run_loop(store, cfg.identity(), cfg.to_dict(), cfg.rounds, steps.for_round, out=out or sys.stderr)
    return outcome, write_loop_report(store, cfg.identity(), reports_dir)

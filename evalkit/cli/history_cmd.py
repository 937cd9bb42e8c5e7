"""``evalkit history``: the run history page of a suite (every complete run's headline metrics with
95% CIs over time, loop rounds as lines, links to each run's report)."""

from __future__ import annotations

import argparse

from evalkit.cli import options


def register(sub: argparse._SubParsersAction) -> None:
    hp = sub.add_parser("history", help="write <reports-dir>/history-<suite>.html: every run of a suite over time")
    hp.add_argument("--suite", required=True, help="suite name (as stored with the runs: evalkit runs)")
    options.add_reports_dir(hp)
    hp.add_argument("--no-run-links", action="store_true",
                    help="do not add a 'Run history' link to each run's report index")
    hp.set_defaults(func=cmd_history)


def cmd_history(args: argparse.Namespace) -> int:
    from evalkit.report.history import write_history

    path = write_history(options.store(args, create=False), args.suite, args.reports_dir,
                         link_runs=not args.no_run_links)
    print(path)
    return 0

"""``evalkit eval``: run a suite on a model and store every sample."""

from __future__ import annotations

import argparse

from evalkit.cli import options
from evalkit.cli.output import human_out, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="run a suite on a model and store every sample")
    e.add_argument("--model", default="smollm2-135m", help="model string (see README: MODEL forms)")
    e.add_argument("--suite", default="core", help="suite name in suites/ or a YAML path")
    options.add_data_dir(e)
    e.add_argument("--limit", type=int, default=None, help="samples per task (overrides the suite's limits)")
    options.add_runtime(e)
    e.add_argument("--part", default="all", choices=["all", "confirm"],
                   help="confirm: entries with confirm_fraction run only their confirmation half (the loop's candidates)")
    options.add_reports_dir(e)
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--force", action="store_true",
                   help="evaluate again even if a complete run with the same identity is stored (default: reuse it)")
    e.add_argument("--name", default=None,
                   help="a label for the run (not part of its identity; a reused run takes the new name)")
    e.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="a key=value label, repeatable (not part of the identity; merged into a reused run's tags)")
    e.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="a folder of your own lm-eval task YAMLs for every lm-eval entry, repeatable (part of the suite hash)")
    options.add_json(e)
    e.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from evalkit import api
    from evalkit.report.summary import write_summary

    settings = api.EvalSettings(
        model=args.model, suite=args.suite, data_dir=args.data_dir or None, limit=args.limit, dtype=args.dtype,
        device=args.device, batch_size=args.batch_size, progress=not args.no_progress, part=args.part,
        force=args.force, include_path=tuple(args.include_path), name=args.name, tags=api.parse_tags(args.tag),
    )
    store = options.store(args)
    result = api.evaluate(settings, store)
    summary = [m for m in result.metrics if m["task"] == m["entry"]]
    out = human_out(args.json)
    print(file=out)
    print_table(summary, ["task", "metric", "value", "stderr", "n"], out)
    for name, note in result.notes.items():
        print(f"{name}: {note}", file=out)
    html = write_summary(store, result.run_id, args.reports_dir, result.notes)
    how = "reused, nothing evaluated" if result.reused else ("resumed, " if result.resumed else "") + f"{result.seconds:.0f} s"
    print(f"\nrun {result.run_id} ({how}), "
          f"suite hash {result.suite_hash}", file=out)
    print(f"store: {store.path}\nsummary: {html}", file=out)
    if args.json:
        metrics: dict[str, dict[str, float]] = {}
        for m in summary:
            metrics.setdefault(m["task"], {})[m["metric"]] = m["value"]
        print_json({"run_id": result.run_id, "suite_hash": result.suite_hash, "metrics": metrics})
    return 0

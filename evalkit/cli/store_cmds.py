"""Reading the store: ``evalkit runs``, ``show`` and ``export`` (none of them creates a store)."""

from __future__ import annotations

import argparse
import json

from evalkit.cli import options
from evalkit.cli.output import print_json, print_table, when
from evalkit.errors import EvalkitError


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("runs", help="list runs in the store")
    r.add_argument("-n", type=int, default=50)
    r.add_argument("--all", action="store_true", help="include failed runs (hidden by default)")
    r.add_argument("--model", default=None,
                   help="only runs of this model string: exact, or a glob (* ? [...], case-sensitive), e.g. 'hub:*'")
    r.add_argument("--suite", default=None, help="only runs of this suite name (exact or glob)")
    r.add_argument("--name", default=None, help="only runs with this name (exact or glob)")
    r.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="only runs carrying this tag; repeatable, all must match")
    options.add_json(r)
    r.set_defaults(func=cmd_runs)

    s = sub.add_parser("show", help="show one run's metrics")
    s.add_argument("run", help="run id, unique prefix, or 'latest'")
    options.add_json(s)
    s.set_defaults(func=cmd_show)

    x = sub.add_parser("export", help="export a run's samples or metrics to parquet/CSV")
    x.add_argument("run")
    x.add_argument("--what", choices=["samples", "metrics"], default="samples")
    x.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    x.add_argument("--out")
    x.set_defaults(func=cmd_export)


def cmd_runs(args: argparse.Namespace) -> int:
    from evalkit.api import parse_tags

    filters = {"model": args.model, "suite": args.suite, "name": args.name, "tags": parse_tags(args.tag)}
    store = options.store(args, create=False)
    runs = store.list_runs(args.n, include_failed=args.all, **filters)
    hidden = 0 if args.all else store.count_runs("failed", **filters)
    rows = [
        {"run_id": r.run_id, "name": r.name, "status": r.status, "model": r.model_spec, "suite": r.suite_name,
         "suite_hash": r.suite_hash, "created": when(r.created_at), "attempts": r.attempts,
         "tags": r.tags if args.json else ",".join(f"{k}={v}" for k, v in sorted(r.tags.items()))}
        for r in runs
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["run_id", "name", "status", "model", "suite", "suite_hash", "created", "attempts", "tags"])
        if hidden:
            print(f"({hidden} failed run{'s' if hidden > 1 else ''} hidden: evalkit runs --all)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = options.store(args, create=False)
    run = store.get_run(args.run)
    metrics = store.metrics(run.run_id)
    if args.json:
        print_json({"run": run.__dict__, "metrics": metrics})
        return 0
    print(f"run {run.run_id}  status {run.status}  attempts {run.attempts}")
    print(f"model {run.model_spec}  ({run.model_hash})")
    print(f"suite {run.suite_name}  hash {run.suite_hash}")
    if run.name is not None or run.tags:
        print(f"name {run.name or '-'}  tags {','.join(f'{k}={v}' for k, v in sorted(run.tags.items())) or '-'}")
    print(f"settings {json.dumps(run.settings)}")
    if run.timings:
        print(f"timings {json.dumps(run.timings)}")
    if run.error:
        print(f"last error: {run.error}")
    print()
    print_table(metrics, ["entry", "task", "metric", "value", "stderr", "n"])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import pandas as pd

    store = options.store(args, create=False)
    run = store.get_run(args.run)
    table = store.samples(run.run_id) if args.what == "samples" else store.metrics(run.run_id)
    df = pd.DataFrame(table)
    for col in df.columns:  # nested values become JSON text so every format can hold them
        if df[col].map(lambda v: isinstance(v, (dict, list))).any():
            df[col] = df[col].map(lambda v: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v)
    out = args.out or f"{run.run_id}-{args.what}.{args.format}"
    try:
        if args.format == "parquet":
            df.to_parquet(out, index=False)
        else:
            df.to_csv(out, index=False)
    except OSError as exc:
        raise EvalkitError(f"export: cannot write {out} ({exc})") from exc
    print(f"wrote {len(df)} rows to {out}")
    return 0

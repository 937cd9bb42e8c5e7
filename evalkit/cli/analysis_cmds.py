"""After a run: ``evalkit clusters`` (labelled error slices) and ``evalkit report`` (the HTML report folder)."""

from __future__ import annotations

import argparse

from evalkit.cli import options
from evalkit.cli.output import fmt, human_out, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    cl = sub.add_parser("clusters", help="embed, reduce and cluster a run's samples into labelled error slices")
    cl.add_argument("--run", default="latest", help="run id, prefix or 'latest'")
    cl.add_argument("--tasks", nargs="*", default=None, help="entries/tasks to cluster (default: all)")
    cl.add_argument("--seed", type=int, default=0)
    options.add_json(cl)
    cl.set_defaults(func=cmd_clusters)

    rp = sub.add_parser("report", help="write the run's HTML report folder (summary, calibration, error clusters)")
    rp.add_argument("--run", default="latest", help="run id, prefix or 'latest'")
    options.add_reports_dir(rp)
    rp.add_argument("--recluster", action="store_true", help="recompute clusters even if stored")
    rp.set_defaults(func=cmd_report)


def cmd_clusters(args: argparse.Namespace) -> int:
    from evalkit.analysis.clusters import cluster_run

    store = options.store(args, create=False)
    result = cluster_run(store, args.run, tasks=args.tasks or None, seed=args.seed)
    d = result.to_dict()
    out = human_out(args.json)
    rows = [
        {"cluster": c["cluster_id"], "size": c["size"], "failures": c["failures"], "error_rate": c["error_rate"],
         "lift": c["lift"], "label": c["label"]}
        for c in d["clusters"]
    ]
    rows.sort(key=lambda r: (-(r["failures"] or 0), -(r["lift"] or 0)))
    print_table(rows, ["cluster", "size", "failures", "error_rate", "lift", "label"], out)
    print(f"\n{len(rows)} clusters over run {result.run_id} (method {result.method}, stability ARI "
          f"{fmt(result.stability)}); stored in {store.path}", file=out)
    if args.json:
        print_json(d)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from evalkit.report.run_report import write_run_report

    path = write_run_report(options.store(args, create=False), args.run, args.reports_dir, recluster=args.recluster)
    print(f"report: {path}")
    return 0

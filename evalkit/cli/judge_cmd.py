"""``evalkit judge-agreement``: can this LLM judge be trusted? Its agreement with human pairwise labels."""

from __future__ import annotations

import argparse

from evalkit.cli import options
from evalkit.cli.output import human_out, print_json


def register(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser("judge-agreement", help="how often an LLM judge agrees with human pairwise labels")
    j.add_argument("--judge", default="smollm2-135m", help="judge model string (local, GGUF, openai:...)")
    j.add_argument("--data", required=True, help="LLMBar JSON, HH-RLHF JSONL(.gz) or generic JSONL; comma-separated for several")
    j.add_argument("--limit", type=int, default=None)
    j.add_argument("--tie-policy", choices=["tie", "average"], default="tie",
                   help="a verdict that flips when the order is swapped: a tie, or average the two orders' probabilities")
    j.add_argument("--injection-subset", type=float, default=0.25, help="fraction of pairs probed with a prompt injection (0: off)")
    j.add_argument("--seed", type=int, default=0)
    options.add_runtime(j)
    options.add_reports_dir(j)
    options.add_json(j, "machine output: the table on stderr, one JSON object last on stdout")
    j.set_defaults(func=cmd_judge_agreement)


def cmd_judge_agreement(args: argparse.Namespace) -> int:
    from evalkit.judge.agreement import run_agreement
    from evalkit.report.judge import agreement_table, write_judge_report

    store = options.store(args)
    result = run_agreement(args.judge, args.data, args.limit, store, seed=args.seed, tie_policy=args.tie_policy,
                           injection_subset=int(args.injection_subset) if args.injection_subset >= 1 else args.injection_subset,
                           batch_size=args.batch_size, device=args.device, dtype=args.dtype)
    html = write_judge_report(result, args.reports_dir)
    out = human_out(args.json)  # --json: the table goes to stderr, one JSON object last on stdout
    print(agreement_table(result), file=out)
    print(f"judge run {result.get('id')} stored in {store.path}\nreport: {html}", file=out)
    if args.json:
        print_json({k: v for k, v in result.items() if k != "items"})
    return 0

"""``evalkit score``: score a file of precomputed responses (another system's outputs) with the suite's scorer."""

from __future__ import annotations

import argparse
import json
import os
import sys

from evalkit.cli import options
from evalkit.cli.output import fmt, print_json
from evalkit.errors import EvalkitError


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("score", help="score a file of precomputed responses with the suite's scorer")
    c.add_argument("--task", required=True, choices=["ifeval", "gsm8k", "humaneval"])
    c.add_argument("--data", help="data file (IFEval input_data.jsonl / GSM8K test.jsonl)")
    c.add_argument("--responses", required=True,
                   help="JSONL of responses: {response[, key][, prompt]}; matched by key when every row has one, else by order")
    c.add_argument("--strict-prompts", action="store_true",
                   help="a response prompt that differs from its data row's is an error (default: upstream prompt "
                        "edits are scored against the data's prompt, with one warning line listing them)")
    options.add_json(c)
    c.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    if args.task == "humaneval":
        try:
            from evalkit.tasks.humaneval import score_responses as score_humaneval
        except ImportError as exc:
            raise EvalkitError("score: humaneval scoring is not available in this build") from exc
        if not os.path.isfile(args.responses):
            raise EvalkitError(f"score: missing responses file {args.responses}")
        try:
            result = score_humaneval(args.responses)
        except ValueError as exc:
            raise EvalkitError(f"score: {exc}") from exc
        summary = {k: v for k, v in result.items() if k not in ("samples", "per_task", "tasks")}
    else:
        if not args.data:
            raise EvalkitError(f"score: --data FILE is required for task {args.task}")
        from evalkit.scoring import score_responses

        result = score_responses(args.task, args.data, args.responses, strict_prompts=args.strict_prompts)
        for line in result["warnings"]:  # at most one: every drifted prompt listed in it
            print(f"evalkit: warning: {line}", file=sys.stderr)
        summary = {"task": result["task"], "n": result["n"], "metrics": result["metrics"],
                   "matched_by": result["matched_by"], "prompt_drift": result["prompt_drift"]}
    if args.json:
        print_json(summary)
    else:
        for key, value in (summary.get("metrics") or summary).items():
            print(f"{key}: {fmt(value) if not isinstance(value, dict) else json.dumps(value, default=str)}")
    return 0

"""The ``evalkit`` command line.

Contract relied on by the Makefile, later issues and outside checks: user errors print one
line ``evalkit: error: ...`` to stderr and exit 2; with ``--json`` the last line on stdout is
one JSON object. Thread/offline settings are applied before torch can be imported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from evalkit.env import configure_threads

configure_threads()  # before anything imports torch

from evalkit.errors import EvalkitError  # noqa: E402


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict[str, Any]], cols: list[str], out: Any = None) -> None:
    out = out or sys.stdout  # looked up per call, so redirected/captured stdout is honoured
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)), file=out)


def _store(args: argparse.Namespace, create: bool = True) -> Any:
    """The run store; reading commands pass ``create=False`` (a missing store is an error)."""
    from evalkit.store import RunStore

    return RunStore(args.store, create=create)


# --------------------------------------------------------------------------- commands
def cmd_eval(args: argparse.Namespace) -> int:
    from evalkit.report.summary import write_summary
    from evalkit.runner import EvalSettings, run_suite

    settings = EvalSettings(
        model=args.model, suite=args.suite, data_dir=args.data_dir or None, limit=args.limit, dtype=args.dtype,
        device=args.device, batch_size=args.batch_size, progress=not args.no_progress, part=args.part,
        force=args.force,
    )
    store = _store(args)
    result = run_suite(settings, store)
    summary = [m for m in result.metrics if m["task"] == m["entry"]]
    out = sys.stderr if args.json else sys.stdout
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
        print(json.dumps({"run_id": result.run_id, "suite_hash": result.suite_hash, "metrics": metrics}))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    store = _store(args, create=False)
    runs = store.list_runs(args.n, include_failed=args.all)
    hidden = 0 if args.all else store.count_runs("failed")
    rows = [
        {"run_id": r.run_id, "status": r.status, "model": r.model_spec, "suite": r.suite_name, "suite_hash": r.suite_hash,
         "created": _time(r.created_at), "attempts": r.attempts}
        for r in runs
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        print_table(rows, ["run_id", "status", "model", "suite", "suite_hash", "created", "attempts"])
        if hidden:
            print(f"({hidden} failed run{'s' if hidden > 1 else ''} hidden: evalkit runs --all)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = _store(args, create=False)
    run = store.get_run(args.run)
    metrics = store.metrics(run.run_id)
    if args.json:
        print(json.dumps({"run": run.__dict__, "metrics": metrics}, default=str))
        return 0
    print(f"run {run.run_id}  status {run.status}  attempts {run.attempts}")
    print(f"model {run.model_spec}  ({run.model_hash})")
    print(f"suite {run.suite_name}  hash {run.suite_hash}")
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

    store = _store(args, create=False)
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
        print(json.dumps(summary, default=str))
    else:
        for key, value in (summary.get("metrics") or summary).items():
            print(f"{key}: {_fmt(value) if not isinstance(value, dict) else json.dumps(value, default=str)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from evalkit.analysis.paired import compare_runs
    from evalkit.analysis.tax import alignment_tax
    from evalkit.report.compare import write_compare_report
    from evalkit.store.analyses import save_comparison

    store = _store(args, create=False)
    comp = compare_runs(store, args.a, args.b, allow_suite_mismatch=args.allow_suite_mismatch)
    tax = alignment_tax(comp, args.target) if args.target else None
    result = {"comparison": comp.to_dict(), "tax": tax.to_dict() if tax else None}
    cid = save_comparison(store, comp.run_a, comp.run_b, result)
    html = write_compare_report(comp, cid, args.reports_dir, tax=tax)
    out = sys.stderr if args.json else sys.stdout
    rows = [r.to_dict() for r in comp.rows]
    table = [
        {"entry": r["entry"], "metric": r["metric"], "a": r.get("value_a"), "b": r.get("value_b"), "delta": r.get("delta"),
         "ci95": f"[{_fmt(r.get('ci_lo'))}, {_fmt(r.get('ci_hi'))}]", "p_mcnemar": r.get("p_mcnemar"),
         "sig": "yes" if r.get("significant") else "", "n": r.get("n"),
         "paired": r.get("pairing", "") + (f" ({r['n_items']} items pooled)" if r.get("n_items") else "")}
        for r in rows if r.get("level") == "entry"
    ]
    print_table(table, ["entry", "metric", "a", "b", "delta", "ci95", "p_mcnemar", "sig", "n", "paired"], out)
    if tax is not None:
        t = tax.to_dict()
        print(f"\nalignment tax (targets {', '.join(args.target)}): weighted change on other entries "
              f"{_fmt(t.get('weighted_delta'))} [{_fmt(t.get('ci_lo'))}, {_fmt(t.get('ci_hi'))}]", file=out)
        for e in t.get("per_entry") or []:
            print(f"  {e['entry']} {e['metric']}: {_fmt(e['delta'])} [{_fmt(e['ci_lo'])}, {_fmt(e['ci_hi'])}]", file=out)
    print(f"\ncomparison {cid} stored in {store.path}\nreport: {html}", file=out)
    if args.json:
        print(json.dumps({"id": cid, **result}, default=str))
    return 0


def cmd_kl(args: argparse.Namespace) -> int:
    from evalkit.analysis.kl import kl_divergence
    from evalkit.report.compare import write_compare_report
    from evalkit.store.analyses import save_kl

    prompts = _kl_prompts(args)
    res = kl_divergence(args.model, args.ref, prompts, max_new_tokens=args.max_new_tokens, seed=args.seed,
                        batch_size=args.batch_size)
    store = _store(args)
    kid = save_kl(store, **res.store_fields())
    html = write_compare_report(None, kid, args.reports_dir, kl=res)
    d = res.to_dict()
    out = sys.stderr if args.json else sys.stdout
    print(f"KL({args.model} || {args.ref}) over {len(prompts)} prompts, method {d.get('method')}", file=out)
    print(f"  exact KL per token: {_fmt(d['mean_kl'])} (stderr {_fmt(d['kl_stderr'])}), k1 {_fmt(d['k1'])}, "
          f"k3 {_fmt(d['k3'])}, {d['n_tokens']} tokens", file=out)
    print(f"kl run {kid} stored in {store.path}\nreport: {html}", file=out)
    if args.json:
        print(json.dumps({"id": kid, **d}, default=str))
    return 0


def _kl_prompts(args: argparse.Namespace) -> list[str]:
    """A prompts file, or a suite name: the suite's local test data, seeded sample of --limit."""
    import random

    from evalkit.analysis.kl import load_prompts

    if os.path.isfile(args.prompts):
        return load_prompts(args.prompts, args.limit)
    from evalkit.suite.config import load_suite
    from evalkit.suite.freeze import freeze

    frozen = freeze(load_suite(args.prompts), args.data_dir)
    pool: list[str] = []
    for fe in frozen.entries:
        for cfg in fe.configs.values():
            files = ((cfg.get("dataset_kwargs") or {}).get("data_files") or {}) if isinstance(cfg, dict) else {}
            path = files.get(cfg.get("test_split")) if isinstance(cfg, dict) else None
            if path and str(path).endswith(".jsonl") and cfg.get("output_type") == "generate_until":
                pool.extend(load_prompts(path))
    if not pool:
        raise EvalkitError(f"kl: suite '{args.prompts}' has no local generation prompts (give --data-dir or a prompts file)")
    random.Random(args.seed).shuffle(pool)
    return pool[: args.limit or 32]


def cmd_judge_agreement(args: argparse.Namespace) -> int:
    from evalkit.judge.agreement import run_agreement
    from evalkit.report.judge import agreement_table, write_judge_report

    store = _store(args)
    result = run_agreement(args.judge, args.data, args.limit, store, seed=args.seed, tie_policy=args.tie_policy,
                           injection_subset=int(args.injection_subset) if args.injection_subset >= 1 else args.injection_subset,
                           batch_size=args.batch_size)
    html = write_judge_report(result, args.reports_dir)
    out = sys.stderr if args.json else sys.stdout  # --json: the table goes to stderr, one JSON object last on stdout
    print(agreement_table(result), file=out)
    print(f"judge run {result.get('id')} stored in {store.path}\nreport: {html}", file=out)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "items"}, default=str))
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    from evalkit.analysis.clusters import cluster_run

    store = _store(args, create=False)
    result = cluster_run(store, args.run, tasks=args.tasks or None, seed=args.seed)
    d = result.to_dict()
    out = sys.stderr if args.json else sys.stdout
    rows = [
        {"cluster": c["cluster_id"], "size": c["size"], "failures": c["failures"], "error_rate": c["error_rate"],
         "lift": c["lift"], "label": c["label"]}
        for c in d["clusters"]
    ]
    rows.sort(key=lambda r: (-(r["failures"] or 0), -(r["lift"] or 0)))
    print_table(rows, ["cluster", "size", "failures", "error_rate", "lift", "label"], out)
    print(f"\n{len(rows)} clusters over run {result.run_id} (method {result.method}, stability ARI "
          f"{_fmt(result.stability)}); stored in {store.path}", file=out)
    if args.json:
        print(json.dumps(d, default=str))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from evalkit.report.run_report import write_run_report

    path = write_run_report(_store(args, create=False), args.run, args.reports_dir, recluster=args.recluster)
    print(f"report: {path}")
    return 0


def cmd_loop(args: argparse.Namespace) -> int:
    from trainloop.config import load_config
    from trainloop.loop import run

    cfg = load_config(args.config, {
        "model": args.model, "suite": args.suite, "targets": args.target, "rounds": args.rounds, "method": args.method,
        "strategies": args.strategy, "pool": args.pool, "teacher": args.teacher, "judge": args.judge, "data_dir": args.data_dir, "limit": args.limit, "seed": args.seed,
        "control": args.control, "export_dir": args.export_dir,
        "allow_underpowered": True if args.allow_underpowered else None,
        "skip_judge_check": True if args.skip_judge_check else None,
        **({"rounds": 0} if args.plan else {}),
    })
    outcome, report = run(cfg, _store(args), args.reports_dir)
    ran = ", ".join(f"r{r}:{s}" for r, s in outcome.ran) or "nothing (all steps were stored)"
    print(f"loop {outcome.loop_id}: ran {ran}")
    print(f"loop report: {report}")
    if args.json:
        print(json.dumps({"loop_id": outcome.loop_id, "report": report, "ran": outcome.ran, "reused": outcome.reused}))
    return 0


def _time(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from evalkit.store import default_store_path

    p = argparse.ArgumentParser(prog="evalkit", description="Evaluation-first harness for LLM post-training.")
    p.add_argument("--store", default=default_store_path(), help="run store (SQLite file); env EVALKIT_STORE")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="run a suite on a model and store every sample")
    e.add_argument("--model", default="smollm2-135m", help="model string (see README: MODEL forms)")
    e.add_argument("--suite", default="core", help="suite name in suites/ or a YAML path")
    e.add_argument("--data-dir", default=os.environ.get("EVALKIT_DATA_DIR"), help="local mirror of the datasets")
    e.add_argument("--limit", type=int, default=None, help="samples per task (overrides the suite's limits)")
    e.add_argument("--dtype", default="auto", help="auto | bfloat16 | float32 | float16")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--part", default="all", choices=["all", "confirm"],
                   help="confirm: entries with confirm_fraction run only their confirmation half (the loop's candidates)")
    e.add_argument("--reports-dir", default="reports")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--force", action="store_true",
                   help="evaluate again even if a complete run with the same identity is stored (default: reuse it)")
    e.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("runs", help="list runs in the store")
    r.add_argument("-n", type=int, default=50)
    r.add_argument("--all", action="store_true", help="include failed runs (hidden by default)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_runs)

    s = sub.add_parser("show", help="show one run's metrics")
    s.add_argument("run", help="run id, unique prefix, or 'latest'")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    x = sub.add_parser("export", help="export a run's samples or metrics to parquet/CSV")
    x.add_argument("run")
    x.add_argument("--what", choices=["samples", "metrics"], default="samples")
    x.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    x.add_argument("--out")
    x.set_defaults(func=cmd_export)

    k = sub.add_parser("compare", help="paired per-task deltas of two runs (CI, McNemar), alignment tax")
    k.add_argument("--a", required=True, help="baseline run id (or 'latest')")
    k.add_argument("--b", required=True, help="candidate run id")
    k.add_argument("--target", nargs="*", default=None, help="target entries: the tax is the change on all others")
    k.add_argument("--allow-suite-mismatch", action="store_true")
    k.add_argument("--reports-dir", default="reports")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_compare)

    kl = sub.add_parser("kl", help="KL(policy || reference) on completions sampled from the policy")
    kl.add_argument("--model", required=True, help="policy model string (a PEFT adapter uses the fast path)")
    kl.add_argument("--ref", default="smollm2-135m", help="reference model string")
    kl.add_argument("--prompts", required=True, help="prompts file (.txt / .jsonl) or a suite name")
    kl.add_argument("--data-dir", default=os.environ.get("EVALKIT_DATA_DIR"), help="data mirror when --prompts is a suite")
    kl.add_argument("--limit", type=int, default=None, help="number of prompts (default: all in a file, 32 from a suite)")
    kl.add_argument("--max-new-tokens", type=int, default=48)
    kl.add_argument("--seed", type=int, default=0)
    kl.add_argument("--batch-size", type=int, default=8)
    kl.add_argument("--reports-dir", default="reports")
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(func=cmd_kl)

    j = sub.add_parser("judge-agreement", help="how often an LLM judge agrees with human pairwise labels")
    j.add_argument("--judge", default="smollm2-135m", help="judge model string (local, GGUF, openai:...)")
    j.add_argument("--data", required=True, help="LLMBar JSON, HH-RLHF JSONL(.gz) or generic JSONL; comma-separated for several")
    j.add_argument("--limit", type=int, default=None)
    j.add_argument("--tie-policy", choices=["tie", "average"], default="tie",
                   help="a verdict that flips when the order is swapped: a tie, or average the two orders' probabilities")
    j.add_argument("--injection-subset", type=float, default=0.25, help="fraction of pairs probed with a prompt injection (0: off)")
    j.add_argument("--seed", type=int, default=0)
    j.add_argument("--batch-size", type=int, default=8)
    j.add_argument("--reports-dir", default="reports")
    j.add_argument("--json", action="store_true", help="machine output: the table on stderr, one JSON object last on stdout")
    j.set_defaults(func=cmd_judge_agreement)

    cl = sub.add_parser("clusters", help="embed, reduce and cluster a run's samples into labelled error slices")
    cl.add_argument("--run", default="latest", help="run id, prefix or 'latest'")
    cl.add_argument("--tasks", nargs="*", default=None, help="entries/tasks to cluster (default: all)")
    cl.add_argument("--seed", type=int, default=0)
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=cmd_clusters)

    rp = sub.add_parser("report", help="write the run's HTML report folder (summary, calibration, error clusters)")
    rp.add_argument("--run", default="latest", help="run id, prefix or 'latest'")
    rp.add_argument("--reports-dir", default="reports")
    rp.add_argument("--recluster", action="store_true", help="recompute clusters even if stored")
    rp.set_defaults(func=cmd_report)

    lp = sub.add_parser("loop", help="eval -> failure clusters -> counterexample data -> LoRA SFT/DPO -> gated promotion")
    lp.add_argument("--config", help="loop settings YAML (keys of trainloop.config.LoopConfig); flags override it")
    lp.add_argument("--model", help="starting model (default smollm2-135m)")
    lp.add_argument("--suite", help="frozen suite the loop measures every round on (default loop-demo)")
    lp.add_argument("--target", help="comma-separated suite entries to improve (default ifeval)")
    lp.add_argument("--rounds", type=int, help="training rounds after round 0 (default 2); more rounds continue a loop")
    lp.add_argument("--method", help="auto | sft | dpo | grpo | sft+dpo")
    lp.add_argument("--strategy", help="comma-separated: auto | self | pool | teacher | judge")
    lp.add_argument("--pool", help="JSONL training pool (pool and judge strategies; known answers for GSM8K self)")
    lp.add_argument("--teacher", help="a stronger model (any MODEL form): teacher strategy, extra judge candidate")
    lp.add_argument("--judge", help="pairwise judge model (any MODEL form) for the judge strategy")
    lp.add_argument("--data-dir", default=os.environ.get("EVALKIT_DATA_DIR"), help="local mirror of the datasets")
    lp.add_argument("--limit", type=int, help="cap every suite entry at N samples (smoke runs)")
    lp.add_argument("--seed", type=int)
    lp.add_argument("--control", choices=["random"], help="also train a same-size random-data candidate (the control)")
    lp.add_argument("--export-dir", help="copy each promoted model here too (must not exist)")
    lp.add_argument("--plan", action="store_true", help="dry run: round 0 (eval, clusters) and the power plan, no training")
    lp.add_argument("--allow-underpowered", action="store_true",
                    help="train even when the power plan says the gate cannot detect the hoped-for gain")
    lp.add_argument("--skip-judge-check", action="store_true", help="use a judge that failed (or skipped) the agreement check")
    lp.add_argument("--reports-dir", default="reports")
    lp.add_argument("--json", action="store_true")
    lp.set_defaults(func=cmd_loop)

    c = sub.add_parser("score", help="score a file of precomputed responses with the suite's scorer")
    c.add_argument("--task", required=True, choices=["ifeval", "gsm8k", "humaneval"])
    c.add_argument("--data", help="data file (IFEval input_data.jsonl / GSM8K test.jsonl)")
    c.add_argument("--responses", required=True,
                   help="JSONL of responses: {response[, key][, prompt]}; matched by key when every row has one, else by order")
    c.add_argument("--strict-prompts", action="store_true",
                   help="a response prompt that differs from its data row's is an error (default: upstream prompt "
                        "edits are scored against the data's prompt, with one warning line listing them)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_score)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EvalkitError as exc:
        print(f"evalkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("evalkit: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `evalkit show latest | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())

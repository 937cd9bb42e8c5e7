"""Two models side by side: ``evalkit compare`` (two runs, paired) and ``evalkit kl`` (two models' distributions)."""

from __future__ import annotations

import argparse
import os

from evalkit.cli import options
from evalkit.cli.output import fmt, human_out, print_json, print_table
from evalkit.errors import EvalkitError


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("compare", help="paired per-task deltas of two runs (CI, McNemar), alignment tax")
    k.add_argument("--a", required=True, help="baseline run id (or 'latest')")
    k.add_argument("--b", required=True, help="candidate run id")
    k.add_argument("--target", nargs="*", default=None, help="target entries: the tax is the change on all others")
    k.add_argument("--allow-suite-mismatch", action="store_true")
    options.add_reports_dir(k)
    options.add_json(k)
    k.set_defaults(func=cmd_compare)

    kl = sub.add_parser("kl", help="KL(policy || reference) on completions sampled from the policy")
    kl.add_argument("--model", required=True, help="policy model string (a PEFT adapter uses the fast path)")
    kl.add_argument("--ref", default="smollm2-135m", help="reference model string")
    kl.add_argument("--prompts", required=True, help="prompts file (.txt / .jsonl) or a suite name")
    options.add_data_dir(kl, "data mirror when --prompts is a suite")
    kl.add_argument("--limit", type=int, default=None, help="number of prompts (default: all in a file, 32 from a suite)")
    kl.add_argument("--max-new-tokens", type=int, default=48)
    kl.add_argument("--seed", type=int, default=0)
    # float32 by default: bf16 logits carry ~1e-2 noise, larger than a small adapter's KL (evalkit.analysis.kl)
    options.add_runtime(kl, dtype_default="float32")
    options.add_reports_dir(kl)
    options.add_json(kl)
    kl.set_defaults(func=cmd_kl)


def cmd_compare(args: argparse.Namespace) -> int:
    from evalkit import api
    from evalkit.analysis.tax import alignment_tax
    from evalkit.report.compare import write_compare_report
    from evalkit.store.analyses import save_comparison

    store = options.store(args, create=False)
    comp = api.compare(store, args.a, args.b, allow_suite_mismatch=args.allow_suite_mismatch)
    tax = alignment_tax(comp, args.target) if args.target else None
    result = {"comparison": comp.to_dict(), "tax": tax.to_dict() if tax else None}
    cid = save_comparison(store, comp.run_a, comp.run_b, result)
    html = write_compare_report(comp, cid, args.reports_dir, tax=tax, store=store)
    out = human_out(args.json)
    rows = [r.to_dict() for r in comp.rows]
    table = [
        {"entry": r["entry"], "metric": r["metric"], "a": r.get("value_a"), "b": r.get("value_b"), "delta": r.get("delta"),
         "ci95": f"[{fmt(r.get('ci_lo'))}, {fmt(r.get('ci_hi'))}]", "p_mcnemar": r.get("p_mcnemar"),
         "sig": "yes" if r.get("significant") else "", "n": r.get("n"),
         "paired": r.get("pairing", "") + (f" ({r['n_items']} items pooled)" if r.get("n_items") else "")}
        for r in rows if r.get("level") == "entry"
    ]
    print_table(table, ["entry", "metric", "a", "b", "delta", "ci95", "p_mcnemar", "sig", "n", "paired"], out)
    if tax is not None:
        t = tax.to_dict()
        print(f"\nalignment tax (targets {', '.join(args.target)}): weighted change on other entries "
              f"{fmt(t.get('weighted_delta'))} [{fmt(t.get('ci_lo'))}, {fmt(t.get('ci_hi'))}]", file=out)
        for e in t.get("per_entry") or []:
            print(f"  {e['entry']} {e['metric']}: {fmt(e['delta'])} [{fmt(e['ci_lo'])}, {fmt(e['ci_hi'])}]", file=out)
    print(f"\ncomparison {cid} stored in {store.path}\nreport: {html}", file=out)
    if args.json:
        print_json({"id": cid, **result})
    return 0


def cmd_kl(args: argparse.Namespace) -> int:
    from evalkit import api
    from evalkit.report.compare import write_compare_report
    from evalkit.store.analyses import save_kl

    prompts = _kl_prompts(args)
    res = api.measure_kl(args.model, args.ref, prompts, max_new_tokens=args.max_new_tokens, seed=args.seed,
                         device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    store = options.store(args)
    kid = save_kl(store, **res.store_fields())
    html = write_compare_report(None, kid, args.reports_dir, kl=res)
    d = res.to_dict()
    out = human_out(args.json)
    print(f"KL({args.model} || {args.ref}) over {len(prompts)} prompts, method {d.get('method')}, "
          f"{d['settings'].get('device')} {d['settings'].get('dtype')}", file=out)
    print(f"  exact KL per token: {fmt(d['mean_kl'])} (stderr {fmt(d['kl_stderr'])}), k1 {fmt(d['k1'])}, "
          f"k3 {fmt(d['k3'])}, {d['n_tokens']} tokens", file=out)
    print(f"kl run {kid} stored in {store.path}\nreport: {html}", file=out)
    if args.json:
        print_json({"id": kid, **d})
    return 0


def _kl_prompts(args: argparse.Namespace) -> list[str]:
    """A prompts file, or a suite name: the suite's local test data, seeded sample of --limit."""
    import random

    from evalkit import api
    from evalkit.analysis.kl import load_prompts

    if os.path.isfile(args.prompts):
        return load_prompts(args.prompts, args.limit)
    frozen = api.freeze_suite(args.prompts, args.data_dir)
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

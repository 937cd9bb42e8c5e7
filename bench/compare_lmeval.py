"""evalkit's lm-eval backend vs stock lm-eval's HF backend on the same tasks (issue #7).

Why it is built this way:
  * Both arms get the *same* task config dicts, built once here the way evalkit's suites build
    them (``LmEvalEngine.freeze``), so any difference is the backend, not the prompt.
  * Each arm runs in its own subprocess (``--worker`` mode of this file), alternating per task
    (stock, evalkit; ABBA with ``--repeats 2``), so neither inherits the other's warm caches and
    slow drift of the shared 2-core machine cancels out. Only ``simple_evaluate`` is timed; model
    load is reported separately.
  * Stock lm-eval is given its best batch size: a short probe on a subset picks the fastest of
    ``--stock-batch-sizes`` per task (``auto`` included: on CPU its detection pass runs 5 forward
    passes at max batch 64 x the longest request, x max_length=8192 for generation, so it can be
    slow; probes have a timeout and workers an address-space cap so a huge allocation fails
    cleanly instead of waking the OOM killer).
  * Samples are matched across arms by (lm-eval task name, doc_id): MMLU compares the argmax of
    the 4 choice log-likelihoods, GSM8K compares the raw generated text byte for byte.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/compare_lmeval.py            # full run
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/compare_lmeval.py --mmlu-limit 2 --gsm8k-limit 4 \\
        --probe-mmlu-limit 1 --probe-gsm8k-limit 4 --stock-batch-sizes 1,8        # smoke test
    python bench/compare_lmeval.py --device cuda --stock-batch-sizes 8,32,64,auto   # GPU run

``--device cuda`` (both arms on the GPU, bf16 by default): no address-space cap in the workers (RLIMIT_AS breaks
CUDA initialisation, which reserves far more virtual memory than it uses), ``torch.cuda.synchronize()`` before every
timer stops, peak GPU memory per arm (``torch.cuda.max_memory_allocated`` after a reset), and output to
bench/RESULTS-cuda.md + bench/results-cuda.json so the CPU numbers are kept. Every arm also reports model time (time
inside ``loglikelihood`` / ``generate_until``), prefill tok/s (input tokens of the loglikelihood requests / their
model time) and decode tok/s (generated tokens / generation model time), tokens counted with the model's tokenizer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = ("stock", "evalkit")
WORKER_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",  # 2 busy-waiting OpenMP threads run 2-50x slower on this VM
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1", "HF_UPDATE_DOWNLOAD_COUNTS": "false", "TOKENIZERS_PARALLELISM": "false",
}
FLOP_CONVENTION = ("FLOP/token = 2 x matmul parameters: every parameter except the input-embedding lookup, "
                   "with the (tied) LM head counted once; attention-score FLOPs are not counted")


# ---------------------------------------------------------------- pure helpers (tested)

def parse_batch_sizes(text: str) -> list[int | str]:
    """``"1,8,auto"`` -> ``[1, 8, "auto"]`` (``auto`` / ``auto:N`` are lm-eval's own detection)."""
    out: list[int | str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        out.append(part if part.startswith("auto") else int(part))
    return out


def _first_number(x: Any) -> float:
    """lm-eval logs a choice as ``(loglik, is_greedy)`` in ``filtered_resps`` and ``[(loglik, is_greedy)]`` in ``resps``."""
    while isinstance(x, (list, tuple)):
        x = x[0]
    return float(x)


def compact_samples(samples: dict[str, list[dict[str, Any]]], output_types: dict[str, str]) -> list[dict[str, Any]]:
    """One record per (task, doc_id) from lm-eval's logged samples.

    lm-eval logs one record *per filter* (GSM8K: strict-match and flexible-extract are two records
    with the same doc_id and the same raw ``resps``), so records are merged and each metric is
    keyed ``"<metric>,<filter>"`` as in lm-eval's results."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for task, records in samples.items():
        mc = output_types.get(task) == "multiple_choice"
        for rec in records:
            key = (task, int(rec["doc_id"]))
            row = merged.get(key)
            if row is None:
                row = {"task": task, "doc_id": key[1], "metrics": {}}
                if mc:
                    src = rec.get("filtered_resps") or rec["resps"]
                    row["lls"] = [_first_number(r) for r in src]
                else:
                    row["text"] = _first_text(rec["resps"])
                merged[key] = row
            for metric in rec.get("metrics", []):
                if metric in rec:
                    row["metrics"][f"{metric},{rec.get('filter', 'none')}"] = float(rec[metric])
    return [merged[k] for k in sorted(merged)]


def _first_text(resps: Any) -> str:
    while isinstance(resps, (list, tuple)):
        resps = resps[0]
    return str(resps)


def task_scores(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each per-doc metric over all docs (micro average: MMLU subjects weighted by size)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for rec in records:
        for k, v in rec["metrics"].items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sorted(sums)}


def agreement(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-sample agreement of two arms' compact records, matched by (task, doc_id).

    Multiple choice: rate of equal argmax over the choice log-likelihoods (first index on ties,
    like lm-eval's ``acc``), the max |delta loglik| over every choice, and how many docs have a tied
    maximum in either arm (lm-eval's HF backend takes log_softmax in bf16, so exact ties are common
    and a backend with finer log-likelihoods may break them the other way). Generation: rate of
    byte-identical raw generations."""
    ia = {(r["task"], r["doc_id"]): r for r in a}
    ib = {(r["task"], r["doc_id"]): r for r in b}
    common = sorted(set(ia) & set(ib))
    out: dict[str, Any] = {"n": len(common), "only_a": len(set(ia) - set(ib)), "only_b": len(set(ib) - set(ia)),
                           "kind": None, "rate": None, "max_abs_dll": None, "tied_max": None, "disagree": []}
    if not common:
        return out
    same, same_ties = 0, 0
    mc = "lls" in ia[common[0]]
    out["kind"] = "mc" if mc else "gen"
    max_dll, tied = 0.0, 0
    for key in common:
        ra, rb = ia[key], ib[key]
        if mc:
            la, lb = ra["lls"], rb["lls"]
            ok = len(la) == len(lb) and _argmax(la) == _argmax(lb)
            if len(la) == len(lb):
                max_dll = max(max_dll, max(abs(x - y) for x, y in zip(la, lb)))
                # tie-tolerant: one arm's pick is among the other's (exactly) tied maxima
                same_ties += ok or la[_argmax(lb)] == max(la) or lb[_argmax(la)] == max(lb)
            tied += la.count(max(la)) > 1 or lb.count(max(lb)) > 1
        else:
            ok = ra["text"].encode() == rb["text"].encode()
        same += ok
        if not ok:
            out["disagree"].append(list(key))
    out["rate"] = same / len(common)
    if mc:
        out["max_abs_dll"], out["tied_max"] = max_dll, tied
        out["rate_ties"] = same_ties / len(common)
    return out


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def arm_order(repeats: int) -> list[str]:
    """stock, evalkit for one repeat; ABBA (then ABBA again) for more, so linear drift cancels."""
    return [arm for r in range(repeats) for arm in (ARMS if r % 2 == 0 else ARMS[::-1])]


def pick_fastest(probe: list[dict[str, Any]]) -> dict[str, int | str]:
    """Fastest successful probe batch size per task."""
    best: dict[str, dict[str, Any]] = {}
    for row in probe:
        if row.get("eval_s") is None:
            continue
        cur = best.get(row["task"])
        if cur is None or row["eval_s"] < cur["eval_s"]:
            best[row["task"]] = row
    return {task: row["batch_size"] for task, row in best.items()}


def speedup(stock_s: float | None, evalkit_s: float | None) -> float | None:
    if not stock_s or not evalkit_s:
        return None
    return stock_s / evalkit_s


def mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def default_outputs(device: str) -> tuple[str, str]:
    """``(--out, --json)`` defaults: CPU numbers live in bench/RESULTS.md + results.json, GPU ones beside them."""
    if device == "cpu":
        return os.path.join("bench", "RESULTS.md"), os.path.join("bench", "results.json")
    return os.path.join("bench", f"RESULTS-{device}.md"), os.path.join("bench", f"results-{device}.json")


def worker_mem_cap(device: str, mem_gb: float) -> float:
    """The address-space cap a worker applies: none on CUDA (the driver maps huge virtual ranges, so RLIMIT_AS makes
    ``cudaInit`` fail with out-of-memory), ``mem_gb`` on CPU."""
    return 0.0 if device != "cpu" else mem_gb


def arm_model(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """How a worker builds its arm: stock -> lm-eval ``HFLM`` keyword arguments; evalkit -> the
    ``create_from_arg_string`` string of the registered ``evalkit`` model (device and dtype in both)."""
    device, dtype = job.get("device", "cpu"), job["dtype"]
    if job["arm"] == "stock":
        return "hf", {"pretrained": job["model_dir"], "dtype": dtype, "batch_size": job["batch_size"], "device": device}
    return "evalkit", {"arg_string": f"model={job['model']},dtype={dtype},device={device}", "additional_config": {"device": device}}


def request_tokens(requests: list[Any], encode: Any) -> int:
    """Input tokens of lm-eval loglikelihood requests (``Instance.args == (context, continuation)``): the context
    and the continuation are encoded apart, as lm-eval's HF backend does, and summed."""
    total = 0
    for req in requests:
        args = getattr(req, "args", req)
        total += sum(len(encode(part)) for part in args[:2] if isinstance(part, str) and part)
    return total


def throughput(model_stats: dict[str, float]) -> dict[str, float | None]:
    """Prefill tok/s = loglikelihood input tokens / loglikelihood model time; decode tok/s = generated tokens /
    generation model time (``None`` where that kind of request did not run); model_s = both times together."""
    ll_s, gen_s = model_stats.get("loglikelihood_s", 0.0), model_stats.get("generate_s", 0.0)
    ll_tok, gen_tok = model_stats.get("loglikelihood_tokens", 0), model_stats.get("generated_tokens", 0)
    return {"model_s": ll_s + gen_s,
            "prefill_tok_s": ll_tok / ll_s if ll_s > 0 and ll_tok else None,
            "decode_tok_s": gen_tok / gen_s if gen_s > 0 and gen_tok else None}


def _mib(x: float | None) -> str:
    return "—" if x is None else f"{x / 2**20:,.0f} MiB"


def score_label(scores: dict[str, float] | None) -> str:
    """MMLU: acc; GSM8K: exact match strict / flexible."""
    if not scores:
        return "—"
    if "acc,none" in scores:
        return f"acc {scores['acc,none']:.4f}"
    strict, flex = scores.get("exact_match,strict-match"), scores.get("exact_match,flexible-extract")
    if strict is not None or flex is not None:
        return f"EM strict {_f(strict, '.4f')} / flex {_f(flex, '.4f')}"
    return ", ".join(f"{k} {v:.4f}" for k, v in scores.items())


def agreement_label(agr: dict[str, Any] | None) -> str:
    if not agr or agr.get("rate") is None:
        return "—"
    if agr["kind"] == "mc":
        ties = f"; {agr['rate_ties']:.2%} if a pick among the other arm's tied maxima counts" if "rate_ties" in agr else ""
        return (f"argmax {agr['rate']:.2%} (max \\|Δ loglik\\| {agr['max_abs_dll']:.3g}; {agr['tied_max']} docs with a tied max"
                f"{ties})")
    return f"text identical {agr['rate']:.2%}"


def _f(x: float | None, spec: str = ".1f") -> str:
    return "—" if x is None else format(x, spec)


def flop_rate(tokens: float, seconds: float, matmul_params: int) -> float:
    """Achieved FLOP/s under :data:`FLOP_CONVENTION`."""
    return tokens / seconds * 2.0 * matmul_params


def noise_floor(task: str, chosen: Any, candidates: list[Any], probe_records: dict[tuple[str, Any], list[dict[str, Any]]],
                evalkit_runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stock against itself at other batch sizes, on the probe subset, next to evalkit on the same docs.

    In bf16 a forward pass depends on sequence/batch shapes (the CPU flash-attention kernel picks
    block sizes from the lengths), so stock lm-eval does not agree with itself across batch sizes;
    this is the floor any other backend's agreement has to be read against."""
    ref = probe_records.get((task, chosen))
    if not ref:
        return []
    others = [(f"stock bs={bs}", probe_records[(task, bs)]) for bs in candidates if bs != chosen and (task, bs) in probe_records]
    if evalkit_runs:
        others.append(("evalkit", evalkit_runs[0]["records"]))
    rows = []
    for name, recs in others:
        agr = agreement(ref, recs)
        rows.append({"pair": f"stock bs={chosen} vs {name}", "n": agr["n"], "rate": agr["rate"],
                     "max_abs_dll": agr.get("max_abs_dll"), "label": agreement_label(agr)})
    return rows


def render_markdown(rep: dict[str, Any]) -> str:
    """The RESULTS.md section: environment, command, probe table, main table, compute numbers."""
    env, lines = rep["env"], []
    lines += ["## evalkit lm-eval backend vs stock lm-eval HF backend (issue #7)", "",
              f"- date: {rep['date']}",
              f"- machine: {env['cpu']}, {env['cores']} cores, torch threads {env.get('torch_threads', '?')}",
              f"- versions: torch {env['torch']}, transformers {env['transformers']}, lm_eval {env['lm_eval']}",
              *([f"- GPU: {env['gpu']}"] if env.get("gpu") else []),
              f"- model: {rep['model']} ({rep.get('dtype', 'bfloat16')}, {rep.get('device', 'cpu')}); seeds {rep['seed']}; repeats {rep['repeats']} "
              f"(arm order per task: {', '.join(arm_order(rep['repeats']))}); each arm in its own subprocess, "
              "only `simple_evaluate` timed",
              f"- limits: MMLU {rep['limits'].get('mmlu') or 'all'} per subject ({rep.get('mmlu_subjects', '?')} subjects, 5-shot), "
              f"GSM8K {rep['limits'].get('gsm8k') or 'all'} (5-shot, max_gen_toks 256)", "",
              "```", rep["command"], "```", ""]
    if rep.get("probe"):
        lines += ["### Probe: stock batch size (subset; fastest per task is used)", "",
                  "| task | batch | n | eval s | load s | status |", "|---|---|---|---|---|---|"]
        for p in rep["probe"]:
            lines.append(f"| {p['task']} | {p['batch_size']} | {p.get('n') or '—'} | {_f(p.get('eval_s'), '.2f')} | "
                         f"{_f(p.get('load_s'), '.2f')} | {p.get('status', 'ok')} |")
        lines += ["", "chosen: " + ", ".join(f"{t} → {b}" for t, b in rep.get("chosen", {}).items()), ""]
    lines += ["### Results", "",
              "| task | n | stock batch | stock score | evalkit score | agreement | stock s | evalkit s | speed-up |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        sp = speedup(r.get("stock_s"), r.get("evalkit_s"))
        lines.append(f"| {r['task']} | {r.get('n', '—')} | {r.get('stock_batch', '—')} | {score_label(r.get('stock_scores'))} | "
                     f"{score_label(r.get('evalkit_scores'))} | {agreement_label(r.get('agreement'))} | "
                     f"{_f(r.get('stock_s'))} | {_f(r.get('evalkit_s'))} | {'—' if sp is None else f'{sp:.2f}×'} |")
    lines += ["", "Times are the mean over repeats of the `simple_evaluate` wall time; speed-up = stock s / evalkit s. "
              "Model load (not in the ratio): " + "; ".join(
                  f"{r['task']} stock {_f(r.get('stock_load_s'), '.1f')} s, evalkit {_f(r.get('evalkit_load_s'), '.1f')} s"
                  for r in rep["rows"]), ""]
    if any(r.get(f"{a}_tput") for r in rep["rows"] for a in ARMS):
        lines += ["### Throughput (model time = time inside loglikelihood / generate_until)", "",
                  "| task | arm | wall s | model s | prefill tok/s | decode tok/s | peak GPU memory |", "|---|---|---|---|---|---|---|"]
        for r in rep["rows"]:
            for arm in ARMS:
                tp = r.get(f"{arm}_tput") or {}
                lines.append(f"| {r['task']} | {arm} | {_f(r.get(f'{arm}_s'))} | {_f(tp.get('model_s'))} | "
                             f"{_f(tp.get('prefill_tok_s'), ',.0f')} | {_f(tp.get('decode_tok_s'), ',.0f')} | "
                             f"{_mib(r.get(f'{arm}_peak_mem'))} |")
        lines.append("")
    floors = [(r["task"], f) for r in rep["rows"] for f in r.get("noise_floor") or []]
    if floors:
        lines += [f"### {rep.get('dtype', 'bfloat16')} noise floor (probe subset: stock vs itself at other batch sizes, and vs evalkit)", "",
                  "| task | pair | n | agreement |", "|---|---|---|---|"]
        lines += [f"| {t} | {f['pair']} | {f['n']} | {f['label']} |" for t, f in floors]
        lines.append("")
    comp = rep.get("compute") or {}
    if comp:
        lines += ["### Compute", ""]
        if comp.get("matmul"):
            lines.append("bf16 `torch.matmul` (best of reps): " + ", ".join(
                f"n={m['n']} {m['gflops']:.0f} GFLOP/s" for m in comp["matmul"]) + f"; **peak {comp['peak_gflops']:.0f} GFLOP/s**.")
        pf = comp.get("prefill")
        if pf:
            lines.append(f"Direct prefill (batch {pf['batch']} × {pf['seq']} tokens, bf16, no_grad): {pf['tok_s']:.0f} tok/s = "
                         f"{pf['gflops']:.0f} GFLOP/s = **{pf['fraction']:.1%} of peak**.")
        ek = comp.get("evalkit_prefill")
        if ek:
            lines.append(f"evalkit arm on MMLU (from `lm.stats`): {ek['tokens']:.0f} prefill tokens in {ek['seconds']:.1f} s = "
                         f"{ek['tok_s']:.0f} tok/s = {ek['gflops']:.0f} GFLOP/s = **{ek['fraction']:.1%} of peak**.")
        else:
            lines.append("evalkit arm exposed no prefill stats (`lm.stats`), so only the direct prefill number is given.")
        if comp.get("matmul_params"):
            lines.append(f"Convention: {FLOP_CONVENTION}; {comp['matmul_params'] / 1e6:.1f}M matmul parameters.")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- worker side (runs in a subprocess)

def _limit_memory(gb: float) -> None:
    """Cap the address space so an oversized allocation raises (lm-eval's auto batch search catches it) instead of
    letting the kernel OOM-kill some other process on this shared machine."""
    if gb > 0:
        import resource

        cap = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _numeric_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    if after is None:
        return None
    before = before or {}
    return {k: (v - before.get(k, 0) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in after.items()}


def worker_eval(job: dict[str, Any]) -> dict[str, Any]:
    """Load one arm's model (timed apart), then time exactly one ``simple_evaluate`` call."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    cuda = job.get("device", "cpu").startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    kind, kwargs = arm_model(job)
    if kind == "hf":
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(**kwargs)
    else:
        import evalkit.models.lmeval_lm  # noqa: F401  (registers the "evalkit" model name)
        from lm_eval.api.registry import get_model

        lm = get_model("evalkit").create_from_arg_string(kwargs["arg_string"], kwargs["additional_config"])
    sync()
    load_s = time.perf_counter() - t0
    model_stats = _instrument(lm, sync)
    stats0 = getattr(lm, "stats", None)
    stats0 = dict(stats0) if isinstance(stats0, dict) else None
    seed = job["seed"]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=list(job["configs"].values()), limit=job["limit"], log_samples=True,
                          apply_chat_template=False, fewshot_as_multiturn=False,
                          random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                          bootstrap_iters=0, task_manager=TaskManager(include_defaults=False))
    sync()
    eval_s = time.perf_counter() - t1
    peak_mem = torch.cuda.max_memory_allocated() if cuda else None
    stats1 = getattr(lm, "stats", None)
    stats1 = dict(stats1) if isinstance(stats1, dict) else None
    types = {t: c.get("output_type", "generate_until") for t, c in job["configs"].items()}
    records = compact_samples(out["samples"], types)
    return {"arm": job["arm"], "load_s": load_s, "eval_s": eval_s, "n": len(records), "records": records,
            "results": out["results"], "stats": _numeric_delta(stats0, stats1), "stats_raw": stats1,
            "lm_class": f"{type(lm).__module__}.{type(lm).__qualname__}", "torch_threads": torch.get_num_threads(),
            "model_stats": model_stats, "tput": throughput(model_stats), "peak_mem": peak_mem,
            "gpu": torch.cuda.get_device_name() if cuda else None}


def _instrument(lm: Any, sync: Any) -> dict[str, float]:
    """Wrap ``lm.loglikelihood`` / ``lm.generate_until`` on the instance (lm-eval's evaluator calls them through
    ``getattr``) to time them (synchronised) and count their tokens with the model's own tokenizer; token counting
    runs outside the timed span."""
    stats: dict[str, float] = {"loglikelihood_s": 0.0, "loglikelihood_tokens": 0, "generate_s": 0.0, "generated_tokens": 0,
                               "loglikelihood_requests": 0, "generate_requests": 0}
    tok = lm.tokenizer

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    ll, gen = lm.loglikelihood, lm.generate_until

    def loglikelihood(requests: list[Any], *a: Any, **kw: Any) -> Any:
        sync()
        t = time.perf_counter()
        res = ll(requests, *a, **kw)
        sync()
        stats["loglikelihood_s"] += time.perf_counter() - t
        stats["loglikelihood_requests"] += len(requests)
        stats["loglikelihood_tokens"] += request_tokens(requests, encode)
        return res

    def generate_until(requests: list[Any], *a: Any, **kw: Any) -> Any:
        sync()
        t = time.perf_counter()
        res = gen(requests, *a, **kw)
        sync()
        stats["generate_s"] += time.perf_counter() - t
        stats["generate_requests"] += len(requests)
        stats["generated_tokens"] += sum(len(encode(r)) for r in res if isinstance(r, str))
        return res

    lm.loglikelihood, lm.generate_until = loglikelihood, generate_until
    return stats


def worker_compute(job: dict[str, Any]) -> dict[str, Any]:
    """bf16 matmul peak, and a direct prefill microbenchmark of the model (batch x seq tokens)."""
    import torch

    device = job.get("device", "cpu")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    mm = []
    for n in (1024, 2048, 4096) if device == "cpu" else (2048, 4096, 8192):
        a, b = (torch.randn(n, n, dtype=torch.bfloat16, device=device) for _ in range(2))
        for _ in range(3):
            torch.matmul(a, b)
        sync()
        best = float("inf")
        for _ in range(job.get("reps", 10)):  # best of many: the machine is shared, take its quiet moments
            t = time.perf_counter()
            torch.matmul(a, b)
            sync()
            best = min(best, time.perf_counter() - t)
        mm.append({"n": n, "best_s": best, "gflops": 2 * n**3 / best / 1e9})
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.bfloat16).to(device).eval()
    emb = model.get_input_embeddings().weight
    # unique parameters (a tied LM head shares the embedding tensor, so it is counted once here)
    total = sum(p.numel() for p in model.parameters())
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is emb
    matmul_params = total if tied else total - emb.numel()
    batch, seq = job.get("batch", 8), job.get("seq", 512)
    ids = torch.randint(0, emb.shape[0], (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        model(ids)
        sync()
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            model(ids)
            sync()
            best = min(best, time.perf_counter() - t)
    return {"matmul": mm, "peak_gflops": max(m["gflops"] for m in mm), "matmul_params": matmul_params,
            "total_params": total, "tied_lm_head": tied, "torch_threads": torch.get_num_threads(),
            "prefill": {"batch": batch, "seq": seq, "best_s": best, "tok_s": batch * seq / best}}


def worker_main(job_path: str) -> int:
    with open(job_path, encoding="utf-8") as fh:
        job = json.load(fh)
    _limit_memory(worker_mem_cap(job.get("device", "cpu"), job.get("mem_gb", 0)))
    res = worker_compute(job) if job["kind"] == "compute" else worker_eval(job)
    with open(job["out"], "w", encoding="utf-8") as fh:
        json.dump(res, fh, default=str)
    return 0


# ---------------------------------------------------------------- driver

def build_configs(task: str, data_dir: str) -> dict[str, dict[str, Any]]:
    """The exact lm-eval config dicts evalkit's suites run (local data, 5-shot, GSM8K 256 new tokens)."""
    from evalkit.engines.lmeval.engine import LmEvalEngine
    from evalkit.suite.config import SuiteEntry

    entry = {"mmlu": SuiteEntry(name="mmlu", task="mmlu", num_fewshot=5),
             "gsm8k": SuiteEntry(name="gsm8k", task="gsm8k", num_fewshot=5, gen_kwargs={"max_gen_toks": 256})}[task]
    return LmEvalEngine().freeze(entry, data_dir, REPO, None).configs


def run_worker(job: dict[str, Any], label: str, workdir: str, timeout: float | None = None) -> dict[str, Any]:
    """Run one job in a fresh interpreter; print start/end lines; on failure ``{"status": ...}`` and the log tail."""
    stem = os.path.join(workdir, re.sub(r"[^A-Za-z0-9=.-]+", "_", label).strip("_"))
    job = {**job, "out": stem + ".out.json"}
    with open(stem + ".job.json", "w", encoding="utf-8") as fh:
        json.dump(job, fh)
    print(f"[{time.strftime('%H:%M:%S')}] start {label}", flush=True)
    t = time.perf_counter()
    status = "ok"
    with open(stem + ".log", "w", encoding="utf-8") as log:
        try:
            rc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", stem + ".job.json"], cwd=REPO,
                                env={**os.environ, **WORKER_ENV}, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc, status = -1, f"timeout {timeout:.0f}s"
    wall = time.perf_counter() - t
    if rc != 0 or not os.path.isfile(job["out"]):
        status = status if status != "ok" else f"failed rc={rc}"
        with open(stem + ".log", encoding="utf-8", errors="replace") as fh:
            tail = "".join(fh.readlines()[-15:])
        print(f"[{time.strftime('%H:%M:%S')}] {status} {label} after {wall:.1f} s (log {stem}.log)\n{tail}", flush=True)
        return {"status": status}
    with open(job["out"], encoding="utf-8") as fh:
        res = json.load(fh)
    res["status"] = "ok"
    extra = f": eval {res['eval_s']:.1f} s, load {res['load_s']:.1f} s, n {res['n']}" if "eval_s" in res else ""
    print(f"[{time.strftime('%H:%M:%S')}] done  {label}{extra} (process {wall:.1f} s)", flush=True)
    return res


def environment() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    env = {"cpu": cpu, "cores": os.cpu_count()}
    for pkg in ("torch", "transformers", "lm_eval"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = "?"
    return env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data-dir", default=os.path.join(os.path.dirname(REPO), "shared", "data"))
    p.add_argument("--tasks", default="mmlu,gsm8k")
    p.add_argument("--mmlu-limit", type=int, default=None, help="per subject (default: all test questions)")
    p.add_argument("--gsm8k-limit", type=int, default=200)
    p.add_argument("--stock-batch-sizes", default="1,8,16,auto")
    p.add_argument("--stock-batch-size", default=None, help="use this stock batch size and skip the probe")
    p.add_argument("--probe-mmlu-limit", type=int, default=3)
    p.add_argument("--probe-gsm8k-limit", type=int, default=16)
    p.add_argument("--probe-timeout", type=float, default=900.0, help="seconds per probe subprocess")
    p.add_argument("--skip-probe", action="store_true", help="no probe: stock uses the first of --stock-batch-sizes")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                   help="both arms' weights and activations (float32: the exactness check, free of bf16 rounding noise)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="both arms' device (cuda: no address-space cap, synchronised timers, peak GPU memory)")
    p.add_argument("--mem-limit-gb", type=float, default=12.0, help="address-space cap per CPU worker (0: none; never on cuda)")
    p.add_argument("--out", default=None, help="markdown report (default bench/RESULTS.md; bench/RESULTS-cuda.md on cuda)")
    p.add_argument("--json", default=None, help="JSON report (default bench/results.json; bench/results-cuda.json on cuda)")
    args = p.parse_args(argv)
    out, js = default_outputs(args.device)
    args.out, args.json = args.out or out, args.json or js
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, REPO)  # evalkit from this checkout, also in workers (their sys.path[0] is bench/)
    if args.worker:
        return worker_main(args.worker)
    data_dir = os.path.abspath(args.data_dir)
    if not os.path.isdir(data_dir):
        print(f"error: data folder {data_dir} not found (pass --data-dir)", file=sys.stderr)
        return 2
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in ("mmlu", "gsm8k")]
    if bad or args.repeats < 1:
        print(f"error: --tasks takes mmlu,gsm8k (got {','.join(bad)}); --repeats >= 1", file=sys.stderr)
        return 2
    from evalkit.errors import EvalkitError
    from evalkit.models.loader import resolve_weights
    from evalkit.models.spec import parse_model

    try:
        model_dir = resolve_weights(parse_model(args.model)).source
        configs = {t: build_configs(t, data_dir) for t in tasks}
    except EvalkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    limits = {"mmlu": args.mmlu_limit, "gsm8k": args.gsm8k_limit}
    probe_limits = {"mmlu": args.probe_mmlu_limit, "gsm8k": args.probe_gsm8k_limit}
    workdir = tempfile.mkdtemp(prefix="compare_lmeval_")
    print(f"model {args.model} ({model_dir}); worker logs in {workdir}", flush=True)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but torch sees no CUDA GPU", file=sys.stderr)
            return 2
    base = {"kind": "eval", "model": args.model, "model_dir": model_dir, "seed": args.seed, "mem_gb": args.mem_limit_gb,
            "dtype": args.dtype, "device": args.device}
    rep: dict[str, Any] = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "env": environment(),
                           "command": shlex.join(["OMP_WAIT_POLICY=PASSIVE", "python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
                           "model": args.model, "dtype": args.dtype, "device": args.device, "seed": args.seed, "repeats": args.repeats, "limits": limits,
                           "probe_limits": probe_limits, "mmlu_subjects": len(configs.get("mmlu", {})) or None,
                           "probe": [], "chosen": {}, "rows": [], "compute": {}}

    comp = run_worker({**base, "kind": "compute", "model_dir": model_dir}, "compute (matmul peak + prefill)", workdir)
    if comp and comp.get("status") == "ok":
        pf = comp["prefill"]
        pf["gflops"] = flop_rate(pf["tok_s"], 1.0, comp["matmul_params"]) / 1e9
        pf["fraction"] = pf["gflops"] / comp["peak_gflops"]
        rep["compute"] = {k: comp[k] for k in ("matmul", "peak_gflops", "matmul_params", "total_params", "tied_lm_head", "prefill")}
        rep["env"]["torch_threads"] = comp["torch_threads"]
        print(f"bf16 matmul peak {comp['peak_gflops']:.0f} GFLOP/s; prefill {pf['tok_s']:.0f} tok/s = {pf['fraction']:.1%} of peak", flush=True)

    candidates = parse_batch_sizes(args.stock_batch_size or args.stock_batch_sizes)
    probe_records: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    if args.stock_batch_size or args.skip_probe or len(candidates) == 1:
        rep["chosen"] = {t: candidates[0] for t in tasks}
    else:
        for t in tasks:
            for bs in candidates:
                res = run_worker({**base, "arm": "stock", "configs": configs[t], "limit": probe_limits[t], "batch_size": bs},
                                 f"probe {t} stock bs={bs}", workdir, timeout=args.probe_timeout)
                if res.get("status") == "ok":
                    probe_records[(t, bs)] = res["records"]
                rep["probe"].append({"task": t, "batch_size": bs, "n": res.get("n"), "eval_s": res.get("eval_s"),
                                     "load_s": res.get("load_s"), "status": res["status"]})
        rep["chosen"] = {t: pick_fastest([p for p in rep["probe"] if p["task"] == t]).get(t, candidates[0]) for t in tasks}
        print("probe chose: " + ", ".join(f"{t} bs={b}" for t, b in rep["chosen"].items()), flush=True)

    failed = False
    for t in tasks:
        runs: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS}
        for i, arm in enumerate(arm_order(args.repeats)):
            job = {**base, "arm": arm, "configs": configs[t], "limit": limits[t], "batch_size": rep["chosen"][t]}
            res = run_worker(job, f"{t} {arm} #{len(runs[arm]) + 1}", workdir)
            if res.get("status") == "ok":
                runs[arm].append(res)
            else:
                failed = True
        row: dict[str, Any] = {"task": t, "stock_batch": rep["chosen"][t]}
        for arm in ARMS:
            ok = runs[arm]
            row[f"{arm}_s"] = mean([r["eval_s"] for r in ok])
            row[f"{arm}_times"] = [r["eval_s"] for r in ok]
            row[f"{arm}_load_s"] = mean([r["load_s"] for r in ok])
            row[f"{arm}_scores"] = task_scores(ok[0]["records"]) if ok else None
            row[f"{arm}_n"] = ok[0]["n"] if ok else None
        for arm in ARMS:
            ok = runs[arm]
            row[f"{arm}_model_stats"] = [r.get("model_stats") for r in ok]
            tps = [r["tput"] for r in ok if r.get("tput")]
            row[f"{arm}_tput"] = {k: mean([tp[k] for tp in tps if tp.get(k) is not None]) for k in tps[0]} if tps else None
            mems = [r["peak_mem"] for r in ok if r.get("peak_mem") is not None]
            row[f"{arm}_peak_mem"] = max(mems) if mems else None
            if ok and ok[0].get("gpu"):
                rep["env"]["gpu"] = ok[0]["gpu"]
        row["evalkit_lm_class"] = runs["evalkit"][0]["lm_class"] if runs["evalkit"] else None
        row["evalkit_stats"] = [r.get("stats") for r in runs["evalkit"]]
        if runs["stock"] and runs["evalkit"]:
            row["agreement"] = agreement(runs["stock"][0]["records"], runs["evalkit"][0]["records"])
            row["n"] = row["agreement"]["n"]
        row["noise_floor"] = noise_floor(t, rep["chosen"][t], candidates, probe_records, runs["evalkit"])
        rep["rows"].append(row)
        st = (row["evalkit_stats"] or [None])[0]
        if t == "mmlu" and st and rep["compute"].get("peak_gflops") and st.get("prefill_seconds"):
            tok_s = st["prefill_tokens"] / st["prefill_seconds"]
            gfl = flop_rate(st["prefill_tokens"], st["prefill_seconds"], rep["compute"]["matmul_params"]) / 1e9
            rep["compute"]["evalkit_prefill"] = {"tokens": st["prefill_tokens"], "seconds": st["prefill_seconds"], "tok_s": tok_s,
                                                 "gflops": gfl, "fraction": gfl / rep["compute"]["peak_gflops"]}

    md = render_markdown(rep)
    print("\n" + md, flush=True)
    for path, text in ((args.out, md + "\n"), (args.json, json.dumps(rep, indent=1, default=str) + "\n")):
        path = path if os.path.isabs(path) else os.path.join(REPO, path)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    print(f"wrote {args.out} and {args.json}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

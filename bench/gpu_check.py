"""The prepared GPU check (issue "The GPU path, fast and proven", item 4): stock lm-eval HF vs evalkit's FastLM.

Runs on a machine that has python3 + torch + transformers + accelerate (+ peft) but no lm_eval, no ``datasets`` and
no network. Everything else travels inside the checkout:

  * ``bench/wheels/``  pure-python wheels of lm_eval (+ requests & co.), made here by ``bench/gpu_wheels.sh``; they
    are unzipped into a scratch folder and put first on ``sys.path`` when ``import lm_eval`` fails (only
    ``lm_eval.models.huggingface`` / ``lm_eval.api.instance`` are used, and those import no ``datasets``).
  * ``bench/stage/data/`` MMLU + GSM8K subset copied from ../shared/data by ``gpu_check.py stage`` (here).
  * ``bench/stage/gpu_model/``  SmolLM2-135M-Instruct's config.json + tokenizer files: speed is measured on a randomly
    initialised model of the same config (the real weights, 517 MB, do not fit one transfer); correctness
    (MC argmax agreement >= 99.5 %, greedy identical >= 95 %) is only judged on real weights, given with
    ``--weights DIR`` or ``GPU_CHECK_WEIGHTS`` (an HF folder), else reported as not run.

Requests are built here, not by lm-eval's task machinery (which needs ``datasets``): MMLU uses lm-eval's
``mmlu`` default template (description, 5-shot from dev, " A".." D" continuations) and GSM8K lm-eval's ``gsm8k``
template ("Question: ...\\nAnswer:", 5-shot, until Question:/</s>/<|im_end|>, greedy) with the first 5 train items
as shots (lm-eval samples them with a seed). Both arms get the very same ``Instance`` lists and the very same
model object, so any difference is the backend. Only ``loglikelihood`` / ``generate_until`` are timed, with
``torch.cuda.synchronize()`` before each timer stops.

    python bench/gpu_check.py stage                                  # here: copy the data subset
    python bench/gpu_check.py run --device cuda --out-dir "$OUT"     # on the GPU machine (bench/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
STAGE = os.path.join(BENCH, "stage", "data")
WHEELS = os.path.join(BENCH, "wheels")
MODEL_DIR = os.path.join(BENCH, "stage", "gpu_model")  # config + tokenizer, staged from the embedded model
ARMS = ("stock", "evalkit")
THRESHOLDS = {"mmlu_argmax": 0.995, "gsm8k_identical": 0.95}
GSM8K_UNTIL = ["Question:", "</s>", "<|im_end|>"]
NOT_RUN = "not run (weights not carried)"
# what the JSON always has (tests/test_gpu_check.py checks these)
JSON_KEYS = ("ok", "date", "device", "env", "model", "limits", "arms", "speedup", "agreement", "correctness", "elapsed_s")
ARM_KEYS = ("load_s", "mmlu_s", "gsm8k_s", "wall_s", "model_s", "prefill_tok_s", "decode_tok_s", "peak_mem_bytes",
            "mmlu_requests", "gsm8k_requests", "prefill_tokens", "generated_tokens")


def _cmp() -> Any:
    """bench/compare_lmeval.py as a module (its pure helpers: agreement, request_tokens, throughput)."""
    spec = importlib.util.spec_from_file_location("compare_lmeval", os.path.join(BENCH, "compare_lmeval.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- staging (runs here, before the transfer)

def stage(data_dir: str, dest: str = STAGE, gsm8k_limit: int = 100, gsm8k_shots: int = 5) -> dict[str, Any]:
    """Copy MMLU dev (all subjects) + test (every subject present) and the first ``gsm8k_limit`` GSM8K test items
    (+ ``gsm8k_shots`` train items) under ``dest``; returns the file count and bytes."""
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    for split in ("dev", "test"):
        src = os.path.join(data_dir, "mmlu", split)
        if not os.path.isdir(src):
            raise SystemExit(f"error: {src} not found (pass --data-dir)")
        shutil.copytree(src, os.path.join(dest, "mmlu", split))
    os.makedirs(os.path.join(dest, "gsm8k"))
    for name, n in (("test.jsonl", gsm8k_limit), ("train.jsonl", gsm8k_shots)):
        with open(os.path.join(data_dir, "gsm8k", name), encoding="utf-8") as src, \
                open(os.path.join(dest, "gsm8k", name), "w", encoding="utf-8") as out:
            for i, line in enumerate(src):
                if i >= n:
                    break
                out.write(line)
    files = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs]
    return {"dest": dest, "files": len(files), "bytes": sum(os.path.getsize(f) for f in files)}


MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
               "special_tokens_map.json")


def stage_model(source: str | None = None, dest: str = MODEL_DIR) -> dict[str, Any]:
    """Copy SmolLM2-135M-Instruct's config and tokenizer (not its weights, ~3.4 MiB) from the embedded
    model's converted folder (``source``; default: evalkit's ``smollm2-135m``) under ``dest``: the GPU
    machine builds a random model of the same shape from them. Staged, not committed (a 3.4 MiB file)."""
    if source is None:
        sys.path.insert(0, REPO)
        from evalkit.models.handle import get_model

        source = get_model("smollm2-135m").weights.source
    os.makedirs(dest, exist_ok=True)
    copied = [f for f in MODEL_FILES if os.path.isfile(os.path.join(source, f))]
    if "config.json" not in copied or "tokenizer.json" not in copied:
        raise SystemExit(f"error: {source} has no config.json/tokenizer.json")
    for f in copied:
        shutil.copy2(os.path.join(source, f), os.path.join(dest, f))
    return {"dest": dest, "files": len(copied), "bytes": sum(os.path.getsize(os.path.join(dest, f)) for f in copied)}


# ---------------------------------------------------------------- requests (pure, tested)

def _subject_title(subject: str) -> str:
    return subject.replace("_", " ")


def read_mmlu(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [{"question": r["question"], "choices": [r[f"choice{i}"] for i in range(4)], "answer": int(r["answer"])}
                for r in csv.DictReader(fh)]


def mmlu_text(doc: dict[str, Any]) -> str:
    c = doc["choices"]
    return f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"


def mmlu_context(subject: str, shots: list[dict[str, Any]], doc: dict[str, Any]) -> str:
    """lm-eval's mmlu default template: description + 5 dev shots (first_n) + the question."""
    desc = f"The following are multiple choice questions (with answers) about {_subject_title(subject)}.\n\n"
    parts = [f"{mmlu_text(s)} {'ABCD'[s['answer']]}" for s in shots]
    return desc + "".join(p + "\n\n" for p in parts) + mmlu_text(doc)


def gsm8k_context(shots: list[dict[str, Any]], doc: dict[str, Any]) -> str:
    parts = [f"Question: {s['question']}\nAnswer: {s['answer']}" for s in shots]
    return "".join(p + "\n\n" for p in parts) + f"Question: {doc['question']}\nAnswer:"


def build_requests(data_dir: str, mmlu_subjects: int | None, mmlu_limit: int | None, gsm8k_limit: int | None,
                   max_gen_toks: int = 256) -> tuple[list[Any], list[Any]]:
    """lm-eval ``Instance`` lists: MMLU loglikelihood (4 per question, metadata (task, doc_id, 1)) and GSM8K
    generate_until. ``None`` limits take everything staged."""
    from lm_eval.api.instance import Instance

    test_dir = os.path.join(data_dir, "mmlu", "test")
    subjects = sorted(f[: -len("_test.csv")] for f in os.listdir(test_dir) if f.endswith("_test.csv"))[:mmlu_subjects]
    mmlu = []
    for subject in subjects:
        shots = read_mmlu(os.path.join(data_dir, "mmlu", "dev", f"{subject}_dev.csv"))[:5]
        for doc_id, doc in enumerate(read_mmlu(os.path.join(test_dir, f"{subject}_test.csv"))[:mmlu_limit]):
            ctx = mmlu_context(subject, shots, doc)
            for i, letter in enumerate("ABCD"):
                mmlu.append(Instance(request_type="loglikelihood", doc=doc, arguments=(ctx, f" {letter}"), idx=i,
                                     metadata=(f"mmlu_{subject}", doc_id, 1)))
    with open(os.path.join(data_dir, "gsm8k", "train.jsonl"), encoding="utf-8") as fh:
        shots = [json.loads(ln) for ln in fh if ln.strip()][:5]
    with open(os.path.join(data_dir, "gsm8k", "test.jsonl"), encoding="utf-8") as fh:
        docs = [json.loads(ln) for ln in fh if ln.strip()][:gsm8k_limit]
    gen_kwargs = {"until": list(GSM8K_UNTIL), "do_sample": False, "temperature": 0.0, "max_gen_toks": max_gen_toks}
    gsm = [Instance(request_type="generate_until", doc=d, arguments=(gsm8k_context(shots, d), dict(gen_kwargs)), idx=0,
                    metadata=("gsm8k", i, 1)) for i, d in enumerate(docs)]
    return mmlu, gsm


def mc_records(requests: list[Any], results: list[Any]) -> list[dict[str, Any]]:
    """compare_lmeval's compact records from MMLU loglikelihood results: one per (task, doc_id), lls in choice order."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for req, res in zip(requests, results):
        task, doc_id, _ = req.metadata
        row = rows.setdefault((task, doc_id), {"task": task, "doc_id": doc_id, "lls": [0.0] * 4, "metrics": {}})
        row["lls"][req.idx] = float(res[0] if isinstance(res, (list, tuple)) else res)
    return [rows[k] for k in sorted(rows)]


def gen_records(requests: list[Any], results: list[str]) -> list[dict[str, Any]]:
    return [{"task": r.metadata[0], "doc_id": r.metadata[1], "text": str(t), "metrics": {}} for r, t in zip(requests, results)]


def correctness(agr: dict[str, Any], real_weights: bool) -> dict[str, Any] | str:
    """Pass/fail against :data:`THRESHOLDS` on real weights; the NOT_RUN string on a random-init model (its near-flat
    logits make argmax agreement a coin toss between numerically equal choices, so it proves nothing)."""
    if not real_weights:
        return NOT_RUN
    mmlu, gsm = agr.get("mmlu") or {}, agr.get("gsm8k") or {}
    checks = {"mmlu_argmax": mmlu.get("rate_ties", mmlu.get("rate")), "gsm8k_identical": gsm.get("rate")}
    passed = {k: v is not None and v >= THRESHOLDS[k] for k, v in checks.items()}
    return {"thresholds": THRESHOLDS, "values": checks, "passed": passed, "pass": all(passed.values())}


# ---------------------------------------------------------------- run (GPU machine, or CPU for the dry run)

def ensure_lm_eval(scratch: str, force: bool = False) -> str:
    """Make ``lm_eval`` importable: when it is missing (or ``force``), unzip every wheel in bench/wheels/ into
    ``scratch`` and put it first on ``sys.path``. Returns where lm_eval comes from."""
    if not force and importlib.util.find_spec("lm_eval") is not None:
        return "installed"
    wheels = sorted(f for f in os.listdir(WHEELS) if f.endswith(".whl")) if os.path.isdir(WHEELS) else []
    if not wheels:
        raise SystemExit("error: lm_eval is not installed and bench/wheels/ has no wheels (run bench/gpu_wheels.sh here first, "
                         "and carry bench/wheels)")
    os.makedirs(scratch, exist_ok=True)
    for whl in wheels:
        with zipfile.ZipFile(os.path.join(WHEELS, whl)) as zf:
            zf.extractall(scratch)
    sys.path.insert(0, scratch)
    importlib.invalidate_caches()
    return f"bench/wheels ({len(wheels)} wheels unzipped)"


def load_model(weights: str | None, device: str, dtype: str, seed: int) -> tuple[Any, Any, str]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dt = getattr(torch, dtype)
    if weights:
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=dt)
        tok_dir, source = weights, os.path.abspath(weights)
    else:
        torch.manual_seed(seed)
        config = AutoConfig.from_pretrained(MODEL_DIR)
        model = AutoModelForCausalLM.from_config(config, dtype=dt)
        tok_dir, source = MODEL_DIR, f"random-init ({os.path.relpath(MODEL_DIR, REPO)}/config.json, seed {seed})"
    tok = AutoTokenizer.from_pretrained(tok_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok, source


def run_arm(arm: str, model: Any, tok: Any, batch_size: int, mmlu: list[Any], gsm: list[Any], device: str,
            cmp: Any, prefill_tokens: int) -> tuple[dict[str, Any], list[Any], list[str]]:
    """One arm on the shared model: time ``loglikelihood`` (MMLU) then ``generate_until`` (GSM8K), synchronised;
    ``prefill_tokens`` (the MMLU requests' input tokens) is counted once by the caller, outside every timer."""
    import torch

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    if arm == "stock":
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    else:
        from evalkit.models.fastlm import FastLM

        lm = FastLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_batch_size=batch_size)
    load_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    copy = [_clone(r) for r in mmlu], [_clone(r) for r in gsm]
    sync()
    t1 = time.perf_counter()
    lls = lm.loglikelihood(copy[0], disable_tqdm=True) if mmlu else []
    sync()
    t2 = time.perf_counter()
    texts = lm.generate_until(copy[1], disable_tqdm=True) if gsm else []
    sync()
    t3 = time.perf_counter()
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    stats = {"loglikelihood_s": t2 - t1, "generate_s": t3 - t2, "loglikelihood_tokens": prefill_tokens,
             "generated_tokens": sum(len(encode(t)) for t in texts)}
    tp = cmp.throughput(stats)
    res = {"load_s": load_s, "mmlu_s": t2 - t1, "gsm8k_s": t3 - t2, "wall_s": t3 - t1, "model_s": tp["model_s"],
           "prefill_tok_s": tp["prefill_tok_s"], "decode_tok_s": tp["decode_tok_s"],
           "peak_mem_bytes": torch.cuda.max_memory_allocated() if cuda else None,
           "mmlu_requests": len(mmlu), "gsm8k_requests": len(gsm), "prefill_tokens": stats["loglikelihood_tokens"],
           "generated_tokens": stats["generated_tokens"], "lm_class": f"{type(lm).__module__}.{type(lm).__qualname__}"}
    return res, lls, texts


def _clone(req: Any) -> Any:
    import copy

    return copy.copy(req)


def environment(device: str) -> dict[str, Any]:
    from importlib import metadata

    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(), "cores": os.cpu_count()}
    for pkg in ("torch", "transformers", "accelerate", "lm_eval"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = "?"
    env["gpu"] = torch.cuda.get_device_name() if device.startswith("cuda") else None
    env["cuda"] = torch.version.cuda
    return env


def block_modules(names: set[str]) -> None:
    """Make the named top-level modules unimportable, the way a machine without them looks (``--block``: the CPU
    dry run simulates the GPU machine, which has no datasets / evaluate / pandas ...): ``None`` in
    ``sys.modules`` makes ``import`` raise and ``importlib.util.find_spec`` return ``None`` (transformers'
    availability checks then see the package as absent)."""
    for name in names:
        sys.modules[name] = None  # type: ignore[assignment]


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    blocked = {m for m in (args.block or "").split(",") if m}
    if blocked:
        block_modules(blocked)
        print(f"simulating a bare machine: blocked {','.join(sorted(blocked))}", flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    sys.path.insert(0, REPO)  # evalkit from this checkout (not installed on the GPU machine)
    for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                 "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
        os.environ.setdefault(k, v)
    # unzipped wheels go to a scratch folder, never under $OUT (everything there is copied back)
    lm_eval_from = ensure_lm_eval(args.scratch or tempfile.mkdtemp(prefix="gpu_check_site_"), force=args.force_wheels)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), args.threads)))
    cmp = _cmp()
    weights = args.weights or os.environ.get("GPU_CHECK_WEIGHTS") or None
    if weights and not os.path.isdir(weights):
        print(f"note: weights folder {weights} not found; using the random-init model", flush=True)
        weights = None
    data_dir = args.data_dir
    if not os.path.isdir(os.path.join(data_dir, "mmlu", "test")):
        print(f"error: {data_dir} has no staged data (run `bench/gpu_check.sh --stage` here and carry bench/stage)",
              file=sys.stderr)
        return 2
    mmlu, gsm = build_requests(data_dir, args.mmlu_subjects, args.mmlu_limit, args.gsm8k_limit, args.max_gen_toks)
    print(f"[{time.strftime('%H:%M:%S')}] lm_eval from {lm_eval_from}; {len(mmlu)} MMLU loglikelihood requests "
          f"({len(mmlu) // 4} questions), {len(gsm)} GSM8K generations (max {args.max_gen_toks} tokens)", flush=True)
    t = time.perf_counter()
    model, tok, source = load_model(weights, args.device, args.dtype, args.seed)
    load_model_s = time.perf_counter() - t
    print(f"[{time.strftime('%H:%M:%S')}] model {source} on {args.device} ({args.dtype}) in {load_model_s:.1f} s", flush=True)
    with torch.no_grad():  # warm-up (CUDA context, cuBLAS handles, kernels), outside every timer
        model(torch.ones(2, 64, dtype=torch.long, device=args.device))
    prefill_tokens = cmp.request_tokens(mmlu, lambda s: tok(s, add_special_tokens=False)["input_ids"])
    arms: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for arm in ARMS:
        res, lls, texts = run_arm(arm, model, tok, args.batch_size, mmlu, gsm, args.device, cmp, prefill_tokens)
        arms[arm], outputs[arm] = res, (mc_records(mmlu, lls), gen_records(gsm, texts))
        print(f"[{time.strftime('%H:%M:%S')}] {arm:7s}: MMLU {res['mmlu_s']:.2f} s ({_f(res['prefill_tok_s'])} prefill tok/s), "
              f"GSM8K {res['gsm8k_s']:.2f} s ({_f(res['decode_tok_s'])} decode tok/s), peak "
              f"{_mib(res['peak_mem_bytes'])}", flush=True)
    agr = {"mmlu": cmp.agreement(outputs["stock"][0], outputs["evalkit"][0]),
           "gsm8k": cmp.agreement(outputs["stock"][1], outputs["evalkit"][1])}
    for a in agr.values():
        a["disagree"] = a["disagree"][:20]
        a["label"] = cmp.agreement_label(a)
    corr = correctness(agr, weights is not None)
    speed = {k: cmp.speedup(arms["stock"][k], arms["evalkit"][k]) for k in ("wall_s", "mmlu_s", "gsm8k_s")}
    rep = {"ok": not isinstance(corr, dict) or corr["pass"], "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size, "env": environment(args.device),
           "lm_eval_from": lm_eval_from, "model": {"source": source, "load_s": load_model_s},
           "limits": {"mmlu_subjects": args.mmlu_subjects, "mmlu_per_subject": args.mmlu_limit, "gsm8k": args.gsm8k_limit,
                      "max_gen_toks": args.max_gen_toks, "mmlu_questions": len(mmlu) // 4},
           "arms": arms, "speedup": speed, "agreement": agr,
           "correctness": corr, "elapsed_s": time.perf_counter() - start}
    path = os.path.join(args.out_dir, "gpu_check.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(rep, fh, indent=1, default=str)
    print(summary(rep), flush=True)
    print(f"wrote {path}", flush=True)
    return 0 if rep["ok"] else 1


def _mib(x: float | None) -> str:
    return "—" if x is None else f"{x / 2**20:,.0f} MiB"


def _f(x: float | None, spec: str = ",.0f") -> str:
    return "—" if x is None else format(x, spec)


def summary(rep: dict[str, Any]) -> str:
    lines = [f"== gpu check: {rep['device']} {rep['env'].get('gpu') or ''} | model {rep['model']['source']}",
             "arm      wall s   model s   prefill tok/s   decode tok/s   peak MiB"]
    for arm in ARMS:
        a = rep["arms"][arm]
        mem = "—" if a["peak_mem_bytes"] is None else f"{a['peak_mem_bytes'] / 2**20:,.0f}"
        lines.append(f"{arm:8s} {a['wall_s']:7.2f} {a['model_s']:9.2f} {_f(a['prefill_tok_s']):>15s} {_f(a['decode_tok_s']):>14s} {mem:>10s}")
    sp = rep["speedup"]
    lines.append("speed-up (stock / evalkit): " + ", ".join(f"{k} {_f(v, '.2f')}×" for k, v in sp.items()))
    lines.append(f"MMLU: {rep['agreement']['mmlu']['label']}; GSM8K: {rep['agreement']['gsm8k']['label']}")
    corr = rep["correctness"]
    lines.append("correctness on real weights: " + (corr if isinstance(corr, str) else
                                                      ("PASS" if corr["pass"] else "FAIL") + f" {corr['values']} vs {corr['thresholds']}"))
    lines.append(f"elapsed {rep['elapsed_s']:.1f} s; ok={rep['ok']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage", help="copy the data subset into bench/stage/data (run here, before the transfer)")
    s.add_argument("--data-dir", default=os.path.join(os.path.dirname(REPO), "shared", "data"))
    s.add_argument("--gsm8k-limit", type=int, default=100)
    r = sub.add_parser("run", help="run both arms and write gpu_check.json")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    r.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    r.add_argument("--data-dir", default=STAGE)
    r.add_argument("--mmlu-subjects", type=int, default=None, help="first N staged subjects (default all)")
    r.add_argument("--mmlu-limit", type=int, default=None, help="questions per subject (default all)")
    r.add_argument("--gsm8k-limit", type=int, default=100)
    r.add_argument("--max-gen-toks", type=int, default=256)
    r.add_argument("--batch-size", type=int, default=32, help="both arms (stock HFLM batch; FastLM max batch)")
    r.add_argument("--weights", default=None, help="HF folder with the real weights (or GPU_CHECK_WEIGHTS); "
                                                   "correctness is judged only then")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2, help="torch threads on cpu")
    r.add_argument("--out-dir", default=os.environ.get("OUT") or os.path.join(BENCH, "gpu-check"))
    r.add_argument("--scratch", default=None, help="where bench/wheels are unzipped (default: a fresh temp folder)")
    r.add_argument("--force-wheels", action="store_true", help="use bench/wheels even when lm_eval is installed")
    r.add_argument("--block", default="", help="comma-separated modules to make unimportable (dry run: simulate the GPU "
                                               "machine, e.g. datasets,evaluate,pyarrow,sklearn)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cmd == "stage":
        for info in (stage(args.data_dir, gsm8k_limit=args.gsm8k_limit), stage_model()):
            print(f"staged {info['files']} files, {info['bytes'] / 2**20:.2f} MiB in {os.path.relpath(info['dest'], REPO)}")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

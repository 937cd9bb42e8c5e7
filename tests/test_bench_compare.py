"""Pure helpers of bench/compare_lmeval.py (no model): lm-eval sample compaction, cross-arm
agreement, arm order, probe choice and the RESULTS.md rendering."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "bench" / "compare_lmeval.py"
_spec = importlib.util.spec_from_file_location("compare_lmeval", _PATH)
assert _spec and _spec.loader
cmp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cmp)


def _mc(doc_id: int, lls: list[float], acc: float) -> dict:
    """An lm-eval multiple-choice sample record, as logged (resps nested one level deeper than filtered_resps)."""
    best = max(lls)
    return {"doc_id": doc_id, "resps": [[(x, x == best)] for x in lls], "filtered_resps": [(x, x == best) for x in lls],
            "filter": "none", "metrics": ["acc"], "acc": acc}


def _gen(doc_id: int, text: str, strict: float, flex: float) -> list[dict]:
    """GSM8K logs one record per filter, with the same raw resps."""
    return [{"doc_id": doc_id, "resps": [[text]], "filtered_resps": ["[invalid]"], "filter": "strict-match",
             "metrics": ["exact_match"], "exact_match": strict},
            {"doc_id": doc_id, "resps": [[text]], "filtered_resps": ["7"], "filter": "flexible-extract",
             "metrics": ["exact_match"], "exact_match": flex}]


def test_compact_merges_filters_and_reads_logliks():
    samples = {"mmlu_a": [_mc(0, [-1.0, -2.0, -3.0, -4.0], 1.0)],
               "gsm8k": _gen(0, " 7 apples", 0.0, 1.0) + _gen(1, " 8", 0.0, 0.0)}
    recs = cmp.compact_samples(samples, {"mmlu_a": "multiple_choice", "gsm8k": "generate_until"})
    assert [(r["task"], r["doc_id"]) for r in recs] == [("gsm8k", 0), ("gsm8k", 1), ("mmlu_a", 0)]
    assert recs[0]["text"] == " 7 apples"
    assert recs[0]["metrics"] == {"exact_match,strict-match": 0.0, "exact_match,flexible-extract": 1.0}
    assert recs[2]["lls"] == [-1.0, -2.0, -3.0, -4.0]
    scores = cmp.task_scores(recs[:2])
    assert scores == {"exact_match,flexible-extract": 0.5, "exact_match,strict-match": 0.0}


def test_mc_agreement_by_task_and_doc_id():
    # the same doc_id in two subjects must not be confused
    a = [{"task": "mmlu_a", "doc_id": 0, "lls": [-1.0, -2.0, -3.0, -4.0], "metrics": {}},
         {"task": "mmlu_b", "doc_id": 0, "lls": [-2.0, -1.0, -3.0, -4.0], "metrics": {}},
         {"task": "mmlu_b", "doc_id": 1, "lls": [-1.0, -1.0, -3.0, -4.0], "metrics": {}},
         {"task": "mmlu_b", "doc_id": 2, "lls": [-1.0, -1.0, -1.0, -1.0], "metrics": {}}]
    b = [{"task": "mmlu_a", "doc_id": 0, "lls": [-1.1, -2.0, -3.0, -4.0], "metrics": {}},
         {"task": "mmlu_b", "doc_id": 0, "lls": [-2.0, -1.5, -1.25, -4.0], "metrics": {}},
         {"task": "mmlu_b", "doc_id": 1, "lls": [-1.0, -1.0, -3.0, -4.0], "metrics": {}}]
    agr = cmp.agreement(a, b)
    assert agr["n"] == 3 and agr["only_a"] == 1 and agr["only_b"] == 0
    assert agr["kind"] == "mc"
    assert agr["rate"] == pytest.approx(2 / 3)
    assert agr["disagree"] == [["mmlu_b", 0]]
    assert agr["max_abs_dll"] == pytest.approx(1.75)
    assert agr["tied_max"] == 1  # mmlu_b/1: a tie broken to the first index in both arms
    assert "argmax 66.67%" in cmp.agreement_label(agr)


def test_gen_agreement_is_byte_identity():
    a = [{"task": "gsm8k", "doc_id": i, "text": t, "metrics": {}} for i, t in enumerate(["x", "caf\u00e9", "y "])]
    b = [{"task": "gsm8k", "doc_id": i, "text": t, "metrics": {}} for i, t in enumerate(["x", "cafe\u0301", "y"])]
    agr = cmp.agreement(a, b)
    assert agr["kind"] == "gen" and agr["n"] == 3 and agr["rate"] == pytest.approx(1 / 3)
    assert agr["max_abs_dll"] is None
    assert cmp.agreement([], b)["rate"] is None


def test_order_probe_choice_and_ratio():
    assert cmp.arm_order(1) == ["stock", "evalkit"]
    assert cmp.arm_order(2) == ["stock", "evalkit", "evalkit", "stock"]
    assert cmp.parse_batch_sizes("1, 8,auto,auto:4") == [1, 8, "auto", "auto:4"]
    probe = [{"task": "mmlu", "batch_size": 1, "eval_s": 5.0}, {"task": "mmlu", "batch_size": 8, "eval_s": 3.0},
             {"task": "mmlu", "batch_size": "auto", "eval_s": None, "status": "timeout 900s"},
             {"task": "gsm8k", "batch_size": 16, "eval_s": 9.0}]
    assert cmp.pick_fastest(probe) == {"mmlu": 8, "gsm8k": 16}
    assert cmp.speedup(10.0, 4.0) == pytest.approx(2.5)
    assert cmp.speedup(None, 4.0) is None and cmp.speedup(10.0, 0.0) is None
    assert cmp.flop_rate(1000, 2.0, 100) == pytest.approx(1e5)


def test_render_markdown_tables():
    rep = {"date": "2026-11-22", "env": {"cpu": "CPU X", "cores": 2, "torch": "2", "transformers": "5", "lm_eval": "0.4"},
           "command": "python bench/compare_lmeval.py --gsm8k-limit 4", "model": "m", "seed": 0, "repeats": 2,
           "limits": {"mmlu": None, "gsm8k": 4}, "mmlu_subjects": 10, "chosen": {"mmlu": 8},
           "probe": [{"task": "mmlu", "batch_size": 8, "n": 30, "eval_s": 3.0, "load_s": 1.0, "status": "ok"},
                     {"task": "mmlu", "batch_size": "auto", "n": None, "eval_s": None, "load_s": None, "status": "timeout 900s"}],
           "rows": [{"task": "mmlu", "n": 30, "stock_batch": 8, "stock_scores": {"acc,none": 0.25},
                     "evalkit_scores": {"acc,none": 0.25}, "stock_s": 30.0, "evalkit_s": 10.0,
                     "agreement": {"kind": "mc", "rate": 1.0, "max_abs_dll": 0.01, "tied_max": 0}},
                    {"task": "gsm8k", "stock_batch": 8, "stock_scores": None, "evalkit_scores": None}],
           "compute": {"matmul": [{"n": 1024, "gflops": 400.0}], "peak_gflops": 400.0, "matmul_params": 134_500_000,
                       "prefill": {"batch": 8, "seq": 512, "tok_s": 1000.0, "gflops": 269.0, "fraction": 0.6725}}}
    md = cmp.render_markdown(rep)
    assert "| task | n | stock batch | stock score | evalkit score | agreement | stock s | evalkit s | speed-up |" in md
    assert "| mmlu | 30 | 8 | acc 0.2500 | acc 0.2500 | argmax 100.00%" in md
    assert "| 30.0 | 10.0 | 3.00× |" in md
    assert "| gsm8k | — | 8 | — | — | — | — | — | — |" in md
    assert "| mmlu | auto | — | — | — | timeout 900s |" in md
    assert "stock, evalkit, evalkit, stock" in md and "CPU X" in md and "--gsm8k-limit 4" in md
    assert "peak 400 GFLOP/s" in md and "67.2% of peak" in md and "no prefill stats" in md
    assert cmp.score_label({"exact_match,strict-match": 0.1, "exact_match,flexible-extract": 0.2}) == "EM strict 0.1000 / flex 0.2000"


# ---------------------------------------------------------------- --device plumbing, tokens/s (issue: the GPU path)

def test_device_defaults_keep_cpu_outputs():
    args = cmp.parse_args([])
    assert args.device == "cpu" and args.out == "bench/RESULTS.md" and args.json == "bench/results.json"
    args = cmp.parse_args(["--device", "cuda"])
    assert args.out == "bench/RESULTS-cuda.md" and args.json == "bench/results-cuda.json"
    args = cmp.parse_args(["--device", "cuda", "--out", "x.md", "--json", "x.json"])
    assert (args.out, args.json) == ("x.md", "x.json")
    with pytest.raises(SystemExit):
        cmp.parse_args(["--device", "tpu"])


def test_no_address_cap_on_cuda(tmp_path, monkeypatch):
    assert cmp.worker_mem_cap("cpu", 12.0) == 12.0
    assert cmp.worker_mem_cap("cuda", 12.0) == 0.0
    caps = []
    monkeypatch.setattr(cmp, "_limit_memory", caps.append)
    monkeypatch.setattr(cmp, "worker_eval", lambda job: {"ok": job["device"]})
    for device in ("cpu", "cuda"):
        job = tmp_path / f"{device}.json"
        job.write_text(cmp.json.dumps({"kind": "eval", "device": device, "mem_gb": 12.0, "out": str(tmp_path / f"{device}.out")}))
        assert cmp.worker_main(str(job)) == 0
    assert caps == [12.0, 0.0]


def test_arm_model_passes_device_and_dtype_to_both_arms():
    job = {"arm": "stock", "model": "smollm2-135m", "model_dir": "/m", "dtype": "bfloat16", "batch_size": 16, "device": "cuda"}
    kind, kw = cmp.arm_model(job)
    assert kind == "hf" and kw == {"pretrained": "/m", "dtype": "bfloat16", "batch_size": 16, "device": "cuda"}
    kind, kw = cmp.arm_model({**job, "arm": "evalkit"})
    assert kind == "evalkit" and kw["arg_string"] == "model=smollm2-135m,dtype=bfloat16,device=cuda"
    assert kw["additional_config"] == {"device": "cuda"}
    assert cmp.arm_model({k: v for k, v in job.items() if k != "device"})[1]["device"] == "cpu"


def test_request_tokens_and_throughput():
    class Req:
        def __init__(self, *args):
            self.args = args

    encode = str.split  # one "token" per word
    reqs = [Req("a b c", " d"), Req("a b c", " e f"), Req("", " x")]
    assert cmp.request_tokens(reqs, encode) == 4 + 5 + 1
    assert cmp.request_tokens([("a b", " c")], encode) == 3  # plain tuples too
    tp = cmp.throughput({"loglikelihood_s": 2.0, "loglikelihood_tokens": 1000, "generate_s": 4.0, "generated_tokens": 200})
    assert tp == {"model_s": 6.0, "prefill_tok_s": 500.0, "decode_tok_s": 50.0}
    tp = cmp.throughput({"loglikelihood_s": 2.0, "loglikelihood_tokens": 1000})
    assert tp["decode_tok_s"] is None and tp["model_s"] == 2.0
    assert cmp.throughput({})["prefill_tok_s"] is None


def test_instrument_times_and_counts():
    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": text.split()}

    class LM:
        tokenizer = Tok()

        def loglikelihood(self, requests, disable_tqdm=False):
            return [(-1.0, True)] * len(requests)

        def generate_until(self, requests, disable_tqdm=False):
            return ["one two three" for _ in requests]

    class Req:
        def __init__(self, *args):
            self.args = args

    lm, synced = LM(), []
    stats = cmp._instrument(lm, lambda: synced.append(1))
    assert lm.loglikelihood([Req("a b", " c"), Req("a b", " d")]) == [(-1.0, True)] * 2
    assert lm.generate_until([Req("q", {})]) == ["one two three"]
    assert stats["loglikelihood_tokens"] == 6 and stats["loglikelihood_requests"] == 2
    assert stats["generated_tokens"] == 3 and stats["generate_requests"] == 1
    assert stats["loglikelihood_s"] >= 0 and len(synced) == 4  # synchronised before start and before stop


def test_render_throughput_table():
    rep = {"date": "d", "env": {"cpu": "c", "cores": 16, "torch": "2", "transformers": "5", "lm_eval": "0.4", "gpu": "NVIDIA H100"},
           "command": "python bench/compare_lmeval.py --device cuda", "model": "m", "seed": 0, "repeats": 1,
           "device": "cuda", "limits": {"mmlu": 2, "gsm8k": 4}, "chosen": {},
           "rows": [{"task": "mmlu", "stock_s": 3.0, "evalkit_s": 1.0, "stock_peak_mem": 2**30, "evalkit_peak_mem": 2**29,
                     "stock_tput": {"model_s": 2.5, "prefill_tok_s": 10000.0, "decode_tok_s": None},
                     "evalkit_tput": {"model_s": 0.9, "prefill_tok_s": 30000.0, "decode_tok_s": None}}]}
    md = cmp.render_markdown(rep)
    assert "(bfloat16, cuda)" in md and "- GPU: NVIDIA H100" in md
    assert "| mmlu | stock | 3.0 | 2.5 | 10,000 | — | 1,024 MiB |" in md
    assert "| mmlu | evalkit | 1.0 | 0.9 | 30,000 | — | 512 MiB |" in md

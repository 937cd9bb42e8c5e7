"""A small hand-built run store for the failure-clustering and report tests.

Samples follow the stored shapes of real lm-eval runs (IFEval doc with instruction_id_list,
GSM8K doc with question/answer and strict-match filter, MMLU doc with choices and per-choice
log-likelihoods). IFEval has two obvious themes so clusters are predictable: "lowercase"
prompts the model fails and "json" prompts it mostly passes.
"""

from __future__ import annotations

from evalkit.analysis.calibration import calibration
from evalkit.store import RunStore

TOPICS = ["rivers", "volcanoes", "bicycles", "coffee", "satellites", "gardens", "pianos", "glaciers", "robots", "bread",
          "tigers", "lighthouses", "chess", "deserts", "violins", "tea", "bridges", "owls", "comets", "tomatoes"]
XSS = "<script>alert(1)</script><img src=x onerror=\"__record('xss executed')\">"


def as_stored(sample: dict, entry: str) -> dict:
    """An input sample in the shape ``RunStore.samples`` returns it."""
    out = {**sample, "entry": entry, "loglik": sample.get("loglikelihoods")}
    out.pop("loglikelihoods", None)
    return out


def _run(store: RunStore) -> str:
    return store.create_run(identity="clusters-test", model_spec="fake-model", model_hash="sha256:0", suite_name="core",
                            suite_hash="h" * 16, suite={}, settings={"limit": 20}, versions={})


def ifeval_samples(n_per_theme: int = 20) -> list[dict]:
    out = []
    for i in range(n_per_theme):
        topic = TOPICS[i % len(TOPICS)]
        out.append({
            "task": "ifeval", "doc_id": i, "prompt": f"<|im_start|>user\nWrite a short poem about {topic}.<|im_end|>",
            "target": "0", "responses": [f"THE {topic.upper()} POEM IN CAPITAL LETTERS SHOUTING LOUDLY" + (XSS if i == 0 else "")],
            "filtered": None,
            "metrics": {"prompt_level_strict_acc": False, "inst_level_strict_acc": [False],
                        "prompt_level_loose_acc": False, "inst_level_loose_acc": [False]},
            "doc": {"key": 1000 + i, "prompt": f"Write a short poem about {topic}. Your entire response must be in english "
                    "lowercase letters, no capital letters allowed.",
                    "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
        })
    for i in range(n_per_theme):
        topic = TOPICS[i % len(TOPICS)]
        ok = i >= 2  # two failures
        out.append({
            "task": "ifeval", "doc_id": 100 + i, "prompt": f"<|im_start|>user\nDescribe {topic} as json.<|im_end|>",
            "target": "0", "responses": ['{"topic": "%s", "description": "braces keys values json object"}' % topic],
            "metrics": {"prompt_level_strict_acc": ok, "inst_level_strict_acc": [ok, True],
                        "prompt_level_loose_acc": ok, "inst_level_loose_acc": [ok, True]},
            "doc": {"key": 2000 + i, "prompt": f"Describe {topic}. Wrap your entire output in JSON format with keys and "
                    "braces, and include the keyword structure.",
                    "instruction_id_list": ["detectable_format:json_format", "keywords:existence"], "kwargs": [{}, {}]},
        })
    return out


def gsm8k_samples(n: int = 20) -> list[dict]:
    out = []
    for i in range(n):
        gold = 10 + i
        got = gold if i % 4 == 0 else gold + 1
        out.append({
            "task": "gsm8k", "doc_id": i, "prompt": f"Question: few-shot...\n\nQuestion: Sam has {gold} apples. How many?\nAnswer:",
            "target": f"He has {gold}.\n#### {gold}", "responses": [f" Sam has {got} apples.\n#### {got}"],
            "filtered": {"strict-match": [str(got)], "flexible-extract": [str(got)]},
            "metrics": {"exact_match,strict-match": float(got == gold), "exact_match,flexible-extract": float(got == gold)},
            "doc": {"question": f"Sam has {gold} apples and trades some oranges at the market. How many apples?",
                    "answer": f"He has {gold}.\n#### {gold}"},
        })
    return out


def mmlu_samples() -> list[dict]:
    out = []
    for subject, q in (("astronomy", "Which planet orbits the sun fastest among the planets"),
                       ("marketing", "Which pricing strategy targets customers with discount coupons")):
        for i in range(10):
            gold = i % 4
            ll = [-1.5, -1.2, -1.4, -1.6]
            chosen = max(range(4), key=lambda k: ll[k])
            out.append({
                "task": f"mmlu_{subject}", "doc_id": i, "prompt": f"...\n{q} variant {i}?\nA. a\nB. b\nC. c\nD. d\nAnswer:",
                "target": str(gold), "loglikelihoods": ll, "responses": None,
                "metrics": {"acc": float(chosen == gold), "brier": 0.8},
                "doc": {"question": f"{q} variant {i}?", "subject": subject, "choices": ["w", "x", "y", "z"], "answer": gold},
            })
    return out


def build_store(path: str) -> tuple[RunStore, str]:
    """A complete run with ifeval (40), gsm8k (20) and mmlu (20) entries; returns (store, run_id)."""
    store = RunStore(path)
    rid = _run(store)
    for entry, samples in (("ifeval", ifeval_samples()), ("gsm8k", gsm8k_samples()), ("mmlu", mmlu_samples())):
        store.start_entry(rid, entry, {})
        metrics, extra = [], {}
        if entry == "mmlu":
            acc = sum(s["metrics"]["acc"] for s in samples) / len(samples)
            cal = calibration([s["loglikelihoods"] for s in samples], [int(s["target"]) for s in samples])
            metrics = [{"task": "mmlu", "metric": "acc", "value": acc, "stderr": 0.1, "n": len(samples)},
                       {"task": "mmlu", "metric": "ece", "value": cal.ece, "stderr": 0.05, "n": len(samples)}]
            extra = {"reliability": cal.bins}
        elif entry == "ifeval":
            v = sum(s["metrics"]["prompt_level_strict_acc"] for s in samples) / len(samples)
            metrics = [{"task": "ifeval", "metric": "prompt_level_strict_acc", "value": v, "stderr": 0.05, "n": len(samples)}]
        else:
            v = sum(s["metrics"]["exact_match,strict-match"] for s in samples) / len(samples)
            metrics = [{"task": "gsm8k", "metric": "exact_match,strict-match", "value": v, "stderr": 0.1, "n": len(samples)}]
        store.complete_entry(rid, entry, samples, metrics, extra)
    store.finish_run(rid, {"total_s": 1.0})
    return store, rid


def tiny_store(path: str) -> tuple[RunStore, str]:
    """Six samples over two entries: below every clustering threshold."""
    store = RunStore(path)
    rid = _run(store)
    for entry, samples in (("ifeval", ifeval_samples(2)), ("gsm8k", gsm8k_samples(2))):
        store.start_entry(rid, entry, {})
        store.complete_entry(rid, entry, samples, [])
    store.finish_run(rid, {})
    return store, rid

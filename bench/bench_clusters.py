"""Failure clustering at volume: build an N-sample run from ../shared/data (IFEval prompts, GSM8K
questions, MMLU questions) with responses borrowed from a real run's store and perturbed, then
time ``cluster_run`` stage by stage (embed load / embed / knn / UMAP JIT / UMAP fits / HDBSCAN /
labels). Not part of ``make test``.

    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
      python bench/bench_clusters.py --n 5000 --data ../shared/data [--responses-from STORE]
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evalkit.analysis.clusters import cluster_run  # noqa: E402
from evalkit.store import RunStore  # noqa: E402


def borrowed(store_path: str | None) -> dict[str, list[str]]:
    """Real model responses per entry (read-only copy of the source store)."""
    if not store_path:
        return {}
    import shutil

    tmp = tempfile.mkdtemp()
    copy = os.path.join(tmp, "src.sqlite")
    shutil.copy(store_path, copy)
    src = RunStore(copy)
    out: dict[str, list[str]] = {}
    for s in src.samples(src.get_run("latest").run_id):
        if s.get("responses"):
            out.setdefault(s["entry"], []).append(s["responses"][0])
    return out


def build(n: int, data: str, responses: dict[str, list[str]], path: str) -> tuple[RunStore, str]:
    rng = random.Random(0)
    ife = [json.loads(line) for line in open(os.path.join(data, "ifeval", "input_data.jsonl"), encoding="utf-8")]
    gsm = [json.loads(line) for f in ("test.jsonl", "train.jsonl") for line in open(os.path.join(data, "gsm8k", f), encoding="utf-8")]
    mmlu = [(os.path.basename(f)[: -len("_test.csv")], r) for f in sorted(glob.glob(os.path.join(data, "mmlu", "test", "*.csv")))
            for r in csv.DictReader(open(f, encoding="utf-8"))]
    n_ife = min(len(ife), n // 9)
    n_mmlu = min(len(mmlu), n // 3)
    n_gsm = n - n_ife - n_mmlu
    store = RunStore(path)
    rid = store.create_run(identity="bench", model_spec="bench", model_hash="0", suite_name="bench", suite_hash="0",
                           suite={}, settings={}, versions={})
    samples = {"ifeval": [], "gsm8k": [], "mmlu": []}
    for i in range(n_ife):
        d = ife[i]
        base = rng.choice(responses.get("ifeval") or ["I am happy to help with that request."])
        resp = f"{d['prompt'].split('.')[0]}. {base}"  # perturbed: starts from this prompt's own words
        per = [rng.random() < 0.3 for _ in d["instruction_id_list"]]
        samples["ifeval"].append({"task": "ifeval", "doc_id": i, "prompt": d["prompt"], "target": "0", "responses": [resp],
                                  "metrics": {"prompt_level_strict_acc": all(per), "inst_level_strict_acc": per}, "doc": d})
    for i in range(n_gsm):
        d = gsm[i % len(gsm)]
        gold = d["answer"].split("####")[-1].strip()
        got = gold if rng.random() < 0.2 else str(rng.randint(1, 500))
        base = rng.choice(responses.get("gsm8k") or [" Let me think."])
        samples["gsm8k"].append({"task": "gsm8k", "doc_id": i, "prompt": "Question: " + d["question"] + "\nAnswer:",
                                 "target": d["answer"], "responses": [base.split("####")[0] + f"#### {got}"],
                                 "filtered": {"strict-match": [got], "flexible-extract": [got]},
                                 "metrics": {"exact_match,strict-match": float(got == gold)}, "doc": d})
    counters: dict[str, int] = {}
    for subject, r in mmlu[:n_mmlu]:
        k = counters[subject] = counters.get(subject, -1) + 1
        ll = [rng.uniform(-2.5, -0.5) for _ in range(4)]
        gold = int(r["answer"])
        samples["mmlu"].append({"task": f"mmlu_{subject}", "doc_id": k, "prompt": r["question"], "target": str(gold),
                                "loglikelihoods": ll, "metrics": {"acc": float(max(range(4), key=ll.__getitem__) == gold)},
                                "doc": {"question": r["question"], "subject": subject, "answer": gold,
                                        "choices": [r[f"choice{j}"] for j in range(4)]}})
    for entry, rows in samples.items():
        store.start_entry(rid, entry, {})
        store.complete_entry(rid, entry, rows, [])
    store.finish_run(rid, {})
    return store, rid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--data", default=os.path.join("..", "shared", "data"))
    ap.add_argument("--responses-from", default=None, help="a store whose latest run lends real responses")
    ap.add_argument("--scope", default="entry")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    store, rid = build(args.n, args.data, borrowed(args.responses_from), os.path.join(tmp, "bench.sqlite"))
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    t = time.perf_counter()
    r = cluster_run(store, rid, seed=args.seed, scope=args.scope)
    wall = time.perf_counter() - t
    print(json.dumps({"n": r.n_samples, "failures": r.n_failures, "clusters": len(r.clusters), "method": r.method,
                      "stability": r.stability, "stability_pairs": r.stability_pairs, "wall_s": round(wall, 2),
                      "timings": r.timings, "load_average_after": os.getloadavg()}))


if __name__ == "__main__":
    main()

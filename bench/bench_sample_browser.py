"""The sample browser at volume: a synthetic 10,000-sample run (3 entries: GSM8K with an 8-shot
prompt, MMLU with a 5-shot prompt, IFEval with long responses; a stored clustering), its
``samples.html`` written, then opened in headless Chromium from ``file://`` with ``#bench=1``: the
page times itself with ``performance.now()`` (first render since navigation start, each filter,
text search, paging, expanding a row) into ``#timings``, which ``--dump-dom`` shows. Reports the
median over ``--repeats`` loads. Not a test and not part of ``make test``.

    python bench/bench_sample_browser.py [--n 10000] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evalkit.report.samples_page import write_samples_page  # noqa: E402
from evalkit.store import RunStore  # noqa: E402
from evalkit.store.clusters import save_clustering  # noqa: E402

WORDS = ("the of and to in is was for on that with as by at from apples train river number total each more less "
         "than twice half price store bought sold left garden pencils minutes hours miles students class books "
         "water market coins paint ticket bakery cookies answer therefore so we").split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def paragraph(rng: random.Random, chars: int) -> str:
    out = []
    while sum(len(s) + 1 for s in out) < chars:
        out.append(sentence(rng, rng.randint(6, 18)))
    return " ".join(out)


def gsm8k(rng: random.Random, n: int) -> list[dict]:
    shots = "".join(f"Question: {paragraph(rng, 280)}\nAnswer: {paragraph(rng, 320)} #### {rng.randint(1, 999)}\n\n"
                    for _ in range(8))  # ~5 KB shared by every sample
    out = []
    for i in range(n):
        gold = rng.randint(1, 500)
        got = gold if rng.random() < 0.45 else gold + rng.randint(1, 9)
        out.append({"task": "gsm8k", "doc_id": i, "prompt": shots + f"Question: {paragraph(rng, 300)}\nAnswer:",
                    "target": f"{paragraph(rng, 250)}\n#### {gold}",
                    "responses": [f"{paragraph(rng, rng.randint(200, 700))} The answer is {got}.\n#### {got}"],
                    "filtered": {"strict-match": [str(got)], "flexible-extract": [str(got)]},
                    "metrics": {"exact_match,strict-match": float(got == gold), "exact_match,flexible-extract": float(got == gold)},
                    "doc": {"question": "q", "answer": f"#### {gold}"}})
    return out


def mmlu(rng: random.Random, n: int) -> list[dict]:
    subjects = ["astronomy", "marketing", "virology", "philosophy"]
    shots = {s: f"The following are multiple choice questions (with answers) about {s}.\n\n"
             + "".join(f"{paragraph(rng, 160)}\nA. x\nB. y\nC. z\nD. w\nAnswer: {rng.choice('ABCD')}\n\n" for _ in range(5))
             for s in subjects}
    out = []
    for i in range(n):
        s = subjects[i % len(subjects)]
        gold = rng.randrange(4)
        ll = [-rng.uniform(0.5, 3.0) for _ in range(4)]
        choices = [paragraph(rng, 30) for _ in range(4)]
        q = paragraph(rng, 200)
        out.append({"task": f"mmlu_{s}", "doc_id": i, "target": str(gold), "responses": None, "loglikelihoods": ll,
                    "prompt": shots[s] + q + "\n" + "\n".join(f"{'ABCD'[k]}. {c}" for k, c in enumerate(choices)) + "\nAnswer:",
                    "metrics": {"acc": float(max(range(4), key=lambda k: ll[k]) == gold), "brier": rng.random()},
                    "doc": {"question": q, "subject": s, "choices": choices, "answer": gold}})
    return out


def ifeval(rng: random.Random, n: int) -> list[dict]:
    out = []
    for i in range(n):
        ok = rng.random() < 0.6
        out.append({"task": "ifeval", "doc_id": i, "target": "0",
                    "prompt": f"<|im_start|>user\n{paragraph(rng, rng.randint(150, 500))}<|im_end|>\n<|im_start|>assistant\n",
                    "responses": [paragraph(rng, rng.randint(600, 2500))], "filtered": None,
                    "metrics": {"prompt_level_strict_acc": ok, "inst_level_strict_acc": [ok, True]},
                    "doc": {"prompt": "p", "instruction_id_list": ["change_case:english_lowercase", "keywords:existence"]}})
    return out


def build(path: str, n: int, seed: int = 0) -> tuple[RunStore, str]:
    rng = random.Random(seed)
    store = RunStore(path)
    rid = store.create_run(identity="bench-samples", model_spec="synthetic", model_hash="sha256:0", suite_name="core",
                           suite_hash="b" * 16, suite={}, settings={}, versions={})
    parts = {"gsm8k": gsm8k(rng, n * 4 // 10), "mmlu": mmlu(rng, n * 3 // 10)}
    parts["ifeval"] = ifeval(rng, n - sum(len(v) for v in parts.values()))
    members, clusters = [], []
    for entry, samples in parts.items():
        store.start_entry(rid, entry, {})
        store.complete_entry(rid, entry, samples, [])
        for s in samples:
            members.append({"entry": entry, "task": s["task"], "doc_id": s["doc_id"], "cluster_id": rng.randrange(12) - 1,
                            "failed": rng.random() < 0.4, "x": rng.random(), "y": rng.random(), "distance": rng.random()})
    for cid in range(-1, 11):
        size = sum(1 for m in members if m["cluster_id"] == cid)
        clusters.append({"cluster_id": cid, "label": " ".join(rng.sample(WORDS, 3)), "terms": [], "size": size,
                         "failures": size // 2, "error_rate": 0.5, "base_rate": 0.4, "lift": 1.25, "task_mix": {},
                         "tag_mix": {}, "examples": []})
    save_clustering(store, {"run_id": rid, "seed": 0, "method": "synthetic", "n_samples": len(members),
                            "n_failures": sum(m["failed"] for m in members)}, clusters, members)
    store.finish_run(rid, {})
    return store, rid


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise SystemExit("no chromium binary found")


def load(page: str, profile: str) -> tuple[dict[str, float], float, str]:
    cmd = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", "file://" + page + "#bench=1"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    wall = time.perf_counter() - t
    dom = done.stdout
    errors = re.search(r'<div id="js-errors"[^>]*>(.*?)</div>', dom, re.S)
    tag = re.search(r'<div id="timings"([^>]*)>', dom)
    if not tag or (errors and errors.group(1).strip()):
        raise SystemExit(f"page failed: {errors.group(1) if errors else ''} {done.stderr[-2000:]}")
    timings = {k.replace("-", "_"): float(v) for k, v in re.findall(r'data-([a-z-]+)="([0-9.]+)"', tag.group(1))}
    count = re.search(r'<span id="count"[^>]*>([^<]*)', dom)
    return timings, wall, count.group(1) if count else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", help="write the store and page here (default: a temp folder, removed)")
    args = ap.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="bench-samples-")
    os.makedirs(tmp, exist_ok=True)
    t = time.perf_counter()
    store, rid = build(os.path.join(tmp, "bench.sqlite"), args.n)
    t_build = time.perf_counter() - t
    samples = store.samples(rid)
    raw_mb = sum(len(s["prompt"] or "") + len(json.dumps(s["responses"])) + len(s["target"] or "") for s in samples) / 1e6
    t = time.perf_counter()
    page = write_samples_page(store, rid, os.path.join(tmp, "reports", rid))
    t_write = time.perf_counter() - t
    size_mb = os.path.getsize(page) / 1e6
    runs = []
    for i in range(args.repeats):
        timings, wall, count = load(page, os.path.join(tmp, f"profile-{i}"))
        runs.append((timings, wall))
    keys = list(runs[0][0])
    med = {k: statistics.median(r[0][k] for r in runs) for k in keys}
    result = {"n": len(samples), "page_mb": round(size_mb, 2), "raw_text_mb": round(raw_mb, 2), "build_store_s": round(t_build, 2),
              "write_page_s": round(t_write, 2), "chromium_wall_s": round(statistics.median(r[1] for r in runs), 2),
              "repeats": args.repeats, "count_line": count, **{k: round(v, 1) for k, v in med.items()}}
    print(json.dumps(result, indent=1))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

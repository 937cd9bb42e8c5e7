"""`evalkit loop` end to end with the real embedded model, tiny limits (slow: evaluates, samples,
trains a LoRA adapter, measures KL and gates, twice over a resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import DATA, FIXTURES

pytestmark = pytest.mark.slow

CONFIG = """
targets: [ifeval]
rounds: 1
data_per_cluster: 0
allow_underpowered: true
self_prompts: 3
self_k: 2
self_max_new_tokens: 24
kl_prompts: 2
kl_max_new_tokens: 8
train: {max_steps: 2, batch_size: 2, lora_r: 4, lora_alpha: 8, max_length: 256}
"""


def _loop(tmp, *extra):
    cmd = [sys.executable, "-m", "evalkit", "--store", str(tmp / "runs.sqlite"), "loop", "--config", str(tmp / "loop.yaml"),
           "--suite", str(FIXTURES / "suites" / "loop-tiny.yaml"), "--data-dir", str(DATA),
           "--reports-dir", str(tmp / "reports"), "--json", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env={**os.environ, "EVALKIT_REQUEST_CHUNK": "4"})


def test_loop_one_round_real_model_then_resume(tmp_path):
    (tmp_path / "loop.yaml").write_text(CONFIG)
    first = _loop(tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    res = json.loads(first.stdout.strip().splitlines()[-1])
    ran = [tuple(x) for x in res["ran"]]
    assert ran[:3] == [(0, "suite"), (0, "eval"), (0, "clusters")]
    assert [s for r, s in ran if r == 1][:7] == ["suite", "select", "train", "eval", "kl", "gate", "promote"]
    for line in ("[round 1/1] train ...", "[round 1/1] gate: done"):
        assert line in first.stderr
    assert os.path.isfile(res["report"])

    from evalkit.store.sqlite import RunStore
    from trainloop.record import store as ls

    store = RunStore(str(tmp_path / "runs.sqlite"))
    steps = {(s["round"], s["step"]): s["result"] for s in ls.steps(store, res["loop_id"])}
    sel = steps[(1, "select")]
    assert sel["sft"] + sel["dpo"] > 0 and sel["strategies"]["self"]["prompts"] == 3
    assert steps[(1, "train")]["steps"] >= 2 and steps[(1, "train")]["loss_curve"]
    assert steps[(1, "kl")]["mean_kl"] >= 0 and steps[(1, "kl")]["method"] == "adapter"
    gate = steps[(1, "gate")]
    assert [c["name"] for c in gate["checks"]][0] == "target" and isinstance(gate["promote"], bool)
    assert steps[(1, "promote")]["promoted"] == gate["promote"]
    html = open(res["report"], encoding="utf-8").read()
    assert "Targeted clusters" in html and 'id="rounds"' in html

    again = _loop(tmp_path)  # same arguments: everything is stored, nothing runs
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["ran"] == []


SPLIT_CONFIG = """
targets: [ifeval]
rounds: 1
method: sft
top_clusters: 2
data_per_cluster: 3
max_prompts: 16
fit_holdout: 2
self_max_new_tokens: 24
control: random
allow_underpowered: true
kl_prompts: 2
kl_max_new_tokens: 8
train: {max_steps: 2, batch_size: 2, lora_r: 4, lora_alpha: 8, max_length: 256}
"""


def _ifeval_rows(n: int) -> list[dict]:
    from trainloop.data.ifeval import build_prompt

    kinds = [["change_case:english_lowercase"], ["startend:end_checker"], ["punctuation:no_comma"],
             ["startend:quotation"]]
    rows = []
    for i in range(n):
        p = build_prompt(f"Write a short note about item {i} of a shopping list.", kinds[i % len(kinds)], seed=i)
        rows.append({"key": 1000 + i, "prompt": p.prompt, "instruction_id_list": list(p.instruction_id_list),
                     "kwargs": [dict(k) for k in p.kwargs]})
    return rows


def test_loop_split_volume_fit_and_control_real_model(tmp_path):
    """The loop that must earn a promotion, through the real model: round 0 on the whole split entry,
    the power plan (overridden: 24 items cannot power anything), greedy verified data with a held-back
    fit check, the random control, candidates on the confirmation half only, loop.json."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(DATA / "mmlu", data / "mmlu")
    (data / "ifeval").mkdir(parents=True)
    (data / "ifeval" / "input_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _ifeval_rows(48)))
    suite = tmp_path / "split.yaml"
    suite.write_text("name: split-tiny\nentries:\n  - name: ifeval\n    task: ifeval\n    apply_chat_template: true\n"
                     "    gen_kwargs: {max_gen_toks: 24}\n    confirm_fraction: 0.5\n"
                     "  - name: mmlu\n    task: mmlu\n    num_fewshot: 2\n    limit: 2\n")
    (tmp_path / "loop.yaml").write_text(SPLIT_CONFIG)
    cmd = [sys.executable, "-m", "evalkit", "--store", str(tmp_path / "runs.sqlite"), "loop", "--config",
           str(tmp_path / "loop.yaml"), "--suite", str(suite), "--data-dir", str(data),
           "--reports-dir", str(tmp_path / "reports"), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "power plan" in res.stderr and "train fit:" in res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    from evalkit.store.sqlite import RunStore
    from trainloop.record import store as ls

    store = RunStore(str(tmp_path / "runs.sqlite"))
    steps = {(s["round"], s["step"]): s["result"] for s in ls.steps(store, out["loop_id"])}
    sizes = steps[(0, "suite")]["split_sizes"]["ifeval"]
    assert sizes["select"] + sizes["confirm"] == 48
    cand = store.samples(steps[(1, "eval")]["run_id"], "ifeval")
    confirm = {int(i) for _, i in steps[(0, "suite")]["split"]["ifeval"]["confirm"]}
    assert {int(s["doc_id"]) for s in cand} == confirm  # the candidate ran the confirmation half only
    sel = steps[(1, "select")]["strategies"]["self"]
    assert sel["holdout"] == 2 and steps[(1, "fit")]["n"] == 2
    assert steps[(1, "control_select")]["sft"] == steps[(1, "select")]["sft"]
    doc = json.load(open(os.path.join(os.path.dirname(out["report"]), "loop.json")))
    r1 = doc["rounds"][1]
    assert r1["decision"] in ("promoted", "rolled_back") and r1["control"]["run_id"]
    assert {g["split"] for g in r1["gated"] if g["check"] == "target"} == {"confirm"}

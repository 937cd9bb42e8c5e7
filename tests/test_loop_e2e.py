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
    from trainloop import store as ls

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

"""The inspect engine: HumanEval as an inspect task on evalkit's model layer.

Fast tests script the model (inspect's ``mockllm`` with a callable, or a tiny random Llama
behind evalkit's own ModelAPI) and run real sandboxed scoring; one slow test runs the
embedded model end to end through ``run_suite``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from evalkit.analysis.passk import pass_at_k
from evalkit.engines.base import RunContext, get_engine
from evalkit.engines.inspect import humaneval as he
from evalkit.errors import EvalkitError
from evalkit.models.loader import LoadedModel, ResolvedWeights
from evalkit.models.spec import ModelSpec, parse_model
from evalkit.store import RunStore
from evalkit.suite.config import SuiteEntry
from evalkit.tasks.humaneval import load_problems

PROBLEMS = load_problems()
SEED = 1234


# ----------------------------------------------------------------------------- helpers
def _problem_in(text: str) -> dict:
    return next(p for p in PROBLEMS.values() if p["prompt"] in text)


def _epoch_of(seed: int) -> int:
    return next(e for e in range(1, 50) if he.derive_seed(SEED, e) == seed)


def _mock(respond) -> Any:
    """An inspect Model whose reply is ``respond(problem, epoch)``; counts its calls."""
    from inspect_ai.model import ModelOutput, ModelUsage, get_model

    calls: list[tuple[str, int]] = []

    def output(input, tools, tool_choice, config):
        problem, epoch = _problem_in(input[-1].text), _epoch_of(config.seed)
        calls.append((problem["task_id"], epoch))
        out = ModelOutput.from_content("mockllm/model", respond(problem, epoch))
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)  # no tiktoken download
        return out

    model = get_model("mockllm/model", custom_outputs=output)
    model.calls = calls  # type: ignore[attr-defined]
    return model


class _Handle:
    """Stands in for ModelHandle: the engine only reads ``weights`` (inspect_model is patched)."""

    weights = ResolvedWeights("/nowhere", "sha256:test")


def _run(tmp_path: Path, monkeypatch, respond, **entry_kw) -> tuple[RunStore, str, Any]:
    from evalkit.engines.inspect import model_api

    model = _mock(respond)
    monkeypatch.setattr(model_api, "inspect_model", lambda handle, **kw: model)
    entry = SuiteEntry(name="he", task="humaneval", engine="inspect", seed=SEED, **entry_kw)
    engine = get_engine("inspect")
    frozen = engine.freeze(entry, None, str(tmp_path), entry.limit)
    store = RunStore(str(tmp_path / "store.sqlite"))
    run_id = store.create_run(identity="i", model_spec="mock", model_hash="h", suite_name="s", suite_hash="x",
                              suite={}, settings={}, versions={})
    engine.run(frozen, _Handle(), RunContext(store=store, run_id=run_id))  # type: ignore[arg-type]
    return store, run_id, model


def _metrics(store: RunStore, run_id: str) -> dict[str, dict]:
    return {m["metric"]: m for m in store.metrics(run_id)}


def _full_function(problem: dict) -> str:
    """The model repeats the signature: a whole function in a fenced block, with chatter around it."""
    return f"Sure!\n```python\n{problem['prompt']}{problem['canonical_solution']}```\nHope this helps."


# ----------------------------------------------------------------------------- extraction
def test_extraction_rule_composes_with_the_prompt():
    p = PROBLEMS["HumanEval/2"]  # truncate_number: return number % 1.0
    full = he.completion_from_response(_full_function(p), p["entry_point"])
    assert full.startswith("\ndef truncate_number(") or "\ndef truncate_number(" in full
    body_col0 = he.completion_from_response("```python\nreturn number % 1.0\n```", p["entry_point"])
    assert body_col0 == "    return number % 1.0"
    unclosed = he.completion_from_response("```python\n    return number % 1.0", p["entry_point"])
    assert unclosed == "    return number % 1.0"
    raw = he.completion_from_response(p["canonical_solution"], p["entry_point"])
    assert raw == p["canonical_solution"]
    from evalkit.sandbox import run_python
    from evalkit.tasks.humaneval import build_program

    for completion in (full, body_col0, unclosed, raw):
        assert run_python(build_program(p, completion)).passed, completion


# ----------------------------------------------------------------------------- freezing
def test_freeze_config_is_stable_and_validated(tmp_path):
    engine = get_engine("inspect")
    entry = SuiteEntry(name="he", task="humaneval", engine="inspect", samples=5, ks=[1, 5], limit=3)
    a, b = engine.freeze(entry, None, str(tmp_path), 3), engine.freeze(entry, None, str(tmp_path), 3)
    assert a.canonical == b.canonical and a.source == "local"
    cfg = a.canonical["humaneval"]
    assert cfg["temperature"] == 0.8 and cfg["max_tokens"] == 384 and cfg["ks"] == [1, 5]
    assert cfg["task_ids"] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert cfg["prompt_template"] == he.PROMPT_TEMPLATE and cfg["sandbox_limits"]["wall_s"] > 0
    (path, digest), = a.files.items()
    assert path.endswith("HumanEval.jsonl.gz") and len(digest) == 64
    greedy = engine.freeze(SuiteEntry(name="he", task="humaneval", engine="inspect", gen_kwargs={"max_gen_toks": 64}),
                           None, ".", None)
    g = greedy.canonical["humaneval"]
    assert g["temperature"] == 0.0 and g["samples"] == 1 and g["ks"] == [1] and g["max_tokens"] == 64
    assert g["num_problems"] == 164 and greedy.note == ""
    with pytest.raises(EvalkitError, match="unknown task 'mbpp'"):
        engine.freeze(SuiteEntry(name="x", task="mbpp", engine="inspect"), None, ".", None)
    with pytest.raises(EvalkitError, match="gen_kwargs"):
        engine.freeze(SuiteEntry(name="x", task="humaneval", engine="inspect", gen_kwargs={"until": ["x"]}), None, ".", None)


def test_suite_hash_covers_inspect_settings(tmp_path):
    from evalkit.suite.config import load_suite
    from evalkit.suite.freeze import freeze

    text = "name: c\nentries:\n  - name: he\n    engine: inspect\n    task: humaneval\n    limit: 2\n    samples: {n}\n"
    hashes = []
    for n in (2, 2, 3):
        (tmp_path / "s.yaml").write_text(text.format(n=n))
        hashes.append(freeze(load_suite(str(tmp_path / "s.yaml")), None).suite_hash)
    assert hashes[0] == hashes[1] != hashes[2]
    suite = load_suite("code")
    assert {e.name: e.engine for e in suite.entries} == {"humaneval": "inspect", "gsm8k_sampled": "lm-eval"}


# ----------------------------------------------------------------------------- running (scripted model)
def test_canonical_solutions_pass_and_land_in_the_store(tmp_path, monkeypatch):
    store, run_id, model = _run(tmp_path, monkeypatch, lambda p, e: _full_function(p), limit=3)
    m = _metrics(store, run_id)
    assert m["pass@1"]["value"] == 1.0 and m["pass@1"]["n"] == 3
    samples = store.samples(run_id)
    assert [s["doc_id"] for s in samples] == [0, 1, 2] and all(s["task"] == "humaneval" for s in samples)
    s0 = samples[0]
    assert s0["responses"] == [_full_function(PROBLEMS["HumanEval/0"])]
    assert s0["metrics"]["n"] == 1 and s0["metrics"]["n_correct"] == 1 and s0["metrics"]["pass@1"] == 1.0
    assert s0["extra"]["epochs"][0]["status"] == "passed" and s0["doc"]["task_id"] == "HumanEval/0"
    assert he.PROMPT_TEMPLATE.split("\n")[0] in s0["prompt"]
    extra = __import__("json").loads(store.entries(run_id)[0]["extra_json"])
    log_path = extra["inspect_log"]
    assert os.path.isfile(log_path) and Path(log_path).parent == tmp_path / "inspect-logs" / run_id
    assert store.entry_status(run_id, "he") == "complete"
    assert not (tmp_path / "inspect-cache" / run_id).exists()  # removed once the entry is stored


def test_wrong_outputs_score_zero_with_sandbox_reasons(tmp_path, monkeypatch):
    store, run_id, _ = _run(tmp_path, monkeypatch, lambda p, e: "```python\n    return None\n```", limit=2)
    assert _metrics(store, run_id)["pass@1"]["value"] == 0.0
    for s in store.samples(run_id):
        ep = s["extra"]["epochs"][0]
        assert not ep["passed"] and ep["status"] == "failed" and ep["reason"]


def test_pass_at_k_matches_the_unbiased_estimator(tmp_path, monkeypatch):
    correct = {"HumanEval/0": {1, 3}, "HumanEval/1": {2}, "HumanEval/2": set(), "HumanEval/3": {1, 2, 3, 4}}

    def respond(problem, epoch):
        return _full_function(problem) if epoch in correct[problem["task_id"]] else "    return 0\n"

    store, run_id, model = _run(tmp_path, monkeypatch, respond, limit=4, samples=4, ks=[1, 2, 4])
    assert sorted(model.calls) == sorted((t, e) for t in correct for e in range(1, 5))
    by_task = {s["extra"]["task_id"]: s for s in store.samples(run_id)}
    m = _metrics(store, run_id)
    for k in (1, 2, 4):
        expected = [pass_at_k(4, len(c), k) for c in correct.values()]
        for (task, c), exp in zip(correct.items(), expected):
            s = by_task[task]
            assert s["metrics"][f"pass@{k}"] == pytest.approx(exp)
            assert s["extra"]["inspect_reductions"][f"pass_at_{k}"] == pytest.approx(exp)  # inspect agrees
        assert m[f"pass@{k}"]["value"] == pytest.approx(sum(expected) / 4) and m[f"pass@{k}"]["n"] == 4
    s0 = by_task["HumanEval/0"]
    assert len(s0["responses"]) == 4 and [e["passed"] for e in s0["extra"]["epochs"]] == [True, False, True, False]


def test_killed_run_resumes_from_the_generate_cache(tmp_path, monkeypatch):
    from evalkit.engines.inspect import model_api

    def flaky(problem, epoch):
        if problem["task_id"] == "HumanEval/1" and epoch == 2:
            raise RuntimeError("simulated crash")
        return _full_function(problem)

    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path, monkeypatch, flaky, limit=2, samples=2)
    store = RunStore(str(tmp_path / "store.sqlite"))
    run_id = store.list_runs()[0].run_id
    assert store.entry_status(run_id, "he") == "running"
    model = _mock(lambda p, e: _full_function(p))
    monkeypatch.setattr(model_api, "inspect_model", lambda handle, **kw: model)
    engine = get_engine("inspect")
    entry = SuiteEntry(name="he", task="humaneval", engine="inspect", seed=SEED, limit=2, samples=2)
    engine.run(engine.freeze(entry, None, ".", 2), _Handle(), RunContext(store=store, run_id=run_id))  # type: ignore[arg-type]
    assert ("HumanEval/1", 2) in model.calls and len(model.calls) < 4  # finished ones were not regenerated
    assert _metrics(store, run_id)["pass@2"]["value"] == 1.0
    extra = __import__("json").loads(store.entries(run_id)[0]["extra_json"])
    assert extra["cached_generations"] == 4 - len(model.calls)


# ----------------------------------------------------------------------------- evalkit's model API
@pytest.fixture(scope="module")
def tiny_loaded() -> LoadedModel:
    """A random 2-layer Llama over a character vocabulary: real transformers generation in ms."""
    from tests.tiny_llama import tiny_llama

    model, tok = tiny_llama()
    spec = ModelSpec(raw="tiny", kind="hf_dir", path="/tiny")
    return LoadedModel(spec=spec, weights=ResolvedWeights("/tiny", "sha256:tiny"), model=model, tokenizer=tok,
                       dtype="float32", device="cpu")


def test_batched_sampling_is_seeded_per_request(tiny_loaded):
    from evalkit.engines.inspect.batching import BatchedGenerator, GenParams

    gen = BatchedGenerator(tiny_loaded.model, tiny_loaded.tokenizer, batch_size=8)
    params = GenParams(max_new_tokens=12, temperature=1.0, add_special_tokens=True)
    prompt = "def add(a, b):"
    together = gen.generate_batch([prompt] * 4, [1, 2, 3, 4], params)
    alone = [gen.generate_batch([prompt], [s], params)[0] for s in (1, 2, 3, 4)]
    assert [c.text for c in together] == [c.text for c in alone]  # draws do not depend on batch mates
    assert len({c.text for c in together}) > 1  # different seeds, different samples
    assert gen.generate_batch([prompt], [1], params)[0].text == alone[0].text
    greedy = GenParams(max_new_tokens=12, temperature=0.0, add_special_tokens=True)
    g1, g2 = gen.generate_batch([prompt, prompt], [1, 2], greedy)
    assert g1.text == g2.text and g1.stop_reason in ("stop", "max_tokens")
    stop_at = together[0].text[3:5]
    cut = gen.generate_batch([prompt], [1], GenParams(max_new_tokens=12, temperature=1.0, stop=(stop_at,),
                                                      add_special_tokens=True))[0]
    assert cut.text == together[0].text[: together[0].text.find(stop_at)] and cut.stop_reason == "stop"


def test_announced_requests_wait_for_each_other(tiny_loaded):
    """Batches must not depend on arrival timing (bf16 is not batch-invariant): announced
    stragglers still join the first batch, cut in the same canonical order."""
    import time

    from evalkit.engines.inspect.batching import BatchedGenerator, GenParams

    params = GenParams(max_new_tokens=4, temperature=1.0, add_special_tokens=True)

    def run(announce: bool) -> list[list[int]]:
        gen = BatchedGenerator(tiny_loaded.model, tiny_loaded.tokenizer, batch_size=3, wait_s=0.05)
        if announce:
            gen.expect(4)
        futures = [gen.submit(f"q{i}", i, params) for i in (3, 1)]
        time.sleep(0.4)  # a stall in the event loop, far longer than wait_s
        futures += [gen.submit(f"q{i}", i, params) for i in (0, 2)]
        [f.result(timeout=60) for f in futures]
        gen.close()
        return gen.last_batches

    assert run(announce=True) == [[0, 1, 2], [3]]  # all four pending, then cut in canonical order
    assert run(announce=False)[0] == [1, 3]  # unannounced: the early two went on their own


def test_model_api_batches_concurrent_requests(tiny_loaded):
    from inspect_ai.model import GenerateConfig, get_model

    from evalkit.engines.inspect import model_api

    key = model_api.register_loaded(tiny_loaded)
    model = get_model("evalkit/tiny", weights=key, batch_size=8, memoize=False)
    assert model.api.loaded is tiny_loaded  # reused, not loaded again
    gen = model.api.generator
    before = gen.batches_run
    cfg = GenerateConfig(temperature=1.0, max_tokens=8, seed=7)

    async def many():
        return await asyncio.gather(*[model.generate(f"question {i}", config=cfg) for i in range(6)])

    gen.expect(6)  # as the engine does: arrival timing (slow machines) must not split the batch
    outs = asyncio.run(many())
    assert gen.batches_run - before == 1  # six concurrent requests, one model.generate call
    assert all(o.usage.output_tokens >= 1 and o.usage.input_tokens > 0 for o in outs)
    gen.expect(6)
    again = asyncio.run(many())
    assert [o.completion for o in outs] == [o.completion for o in again]  # reproducible given the seed
    prompt, templated = model.api.render([__import__("inspect_ai.model", fromlist=["x"]).ChatMessageUser(content="hi")])
    assert templated and prompt == "user: hi\nassistant:"


def test_model_api_outside_a_run_loads_through_a_model_handle(tiny_loaded, tmp_path, monkeypatch):
    """``get_model("evalkit/<MODEL>")`` (inspect's entry point, no evalkit run): a model handle
    decides device and dtype and loads once per weights hash; a second model reuses the load."""
    from inspect_ai.model import get_model

    from evalkit.engines.inspect import model_api
    from evalkit.models import handle as H

    folder = tmp_path / "tiny"
    tiny_loaded.model.save_pretrained(str(folder))
    tiny_loaded.tokenizer.save_pretrained(str(folder))
    asked: list = []
    real = H.get_model
    monkeypatch.setattr(H, "get_model", lambda m, **kw: asked.append(kw) or real(m, **kw))
    first = get_model(f"evalkit/{folder}", device="cpu", dtype="bf16", batch_size=2, memoize=False)
    loaded = first.api.loaded
    assert asked == [{"device": "cpu", "dtype": "bf16"}]
    assert (loaded.device, loaded.dtype) == ("cpu", "bfloat16")
    assert str(next(loaded.model.parameters()).dtype) == "torch.bfloat16"
    assert loaded.weights.weights_hash == real(str(folder), device="cpu").weights.weights_hash
    again = get_model(f"evalkit/{folder}", device="cpu", dtype="bf16", memoize=False)
    assert again.api.loaded is loaded  # one load per process and weights
    with pytest.raises(EvalkitError, match="served"):
        model_api._load("openai:http://127.0.0.1:1/v1#m", "auto", "auto")


def test_served_specs_map_to_inspect_providers(monkeypatch):
    from inspect_ai.model import get_model

    from evalkit.engines.inspect import model_api
    from evalkit.models import hardware

    spec = parse_model("openai:http://127.0.0.1:8000/v1#my-model")
    name, kwargs = model_api.openai_model_args(spec)
    assert name == "openai-api/evalkit/my-model"
    assert kwargs["base_url"] == "http://127.0.0.1:8000/v1" and kwargs["api_key"]
    try:
        import openai  # noqa: F401  (inspect's openai-api provider needs it; not a core dependency)
    except ImportError:
        with pytest.raises(EvalkitError, match="pip install openai"):
            model_api.inspect_model(type("H", (), {"spec": spec})())  # type: ignore[arg-type]
    else:
        model = get_model(name, memoize=False, **kwargs)  # builds the client; no request is made
        assert model.api.base_url == "http://127.0.0.1:8000/v1" and model.api.service_model_name() == "my-model"
    monkeypatch.setattr(hardware, "cuda_available", lambda: False)
    with pytest.raises(EvalkitError, match="vLLM needs a CUDA GPU"):
        model_api.vllm_model_args(parse_model("vllm:HuggingFaceTB/SmolLM2-135M-Instruct"))
    monkeypatch.setattr(hardware, "cuda_available", lambda: True)
    name, kwargs = model_api.vllm_model_args(parse_model("vllm:HuggingFaceTB/SmolLM2-135M-Instruct"), "auto")
    assert name == "vllm/HuggingFaceTB/SmolLM2-135M-Instruct" and kwargs["dtype"] == "bfloat16"


# ----------------------------------------------------------------------------- end to end (real model)
@pytest.mark.slow
def test_embedded_model_end_to_end(tmp_path):
    from evalkit.runner import EvalSettings, run_suite

    suite = tmp_path / "code-tiny.yaml"
    suite.write_text(
        "name: code-tiny\nentries:\n  - name: humaneval\n    engine: inspect\n    task: humaneval\n"
        "    limit: 2\n    samples: 2\n    ks: [1, 2]\n    gen_kwargs: {max_gen_toks: 64}\n"
    )
    store = RunStore(str(tmp_path / "runs" / "evalkit.sqlite"))
    result = run_suite(EvalSettings(model="smollm2-135m", suite=str(suite), data_dir=None, progress=False), store)
    m = {r["metric"]: r for r in result.metrics}
    assert set(m) >= {"pass@1", "pass@2"} and m["pass@1"]["n"] == 2 and 0.0 <= m["pass@2"]["value"] <= 1.0
    samples = store.samples(result.run_id)
    assert len(samples) == 2 and all(len(s["responses"]) == 2 for s in samples)
    assert all(e["status"] in ("passed", "failed", "timeout", "killed", "output_limit")
               for s in samples for e in s["extra"]["epochs"])
    assert all(e["output_tokens"] <= 64 for s in samples for e in s["extra"]["epochs"])
    logs = list((tmp_path / "runs" / "inspect-logs" / result.run_id).glob("*.eval"))
    assert len(logs) == 1

"""The ``openai:<base_url>#<model>`` form against a real OpenAI-compatible server (issue #21).

The fast tests need no server: lm-eval's built-in model names still resolve after evalkit
registers ``evalkit`` (the registry bug that made ``openai:``/``vllm:`` fail with "Supported model
names: evalkit"), and bad input (nothing listening, no vllm package) is one line, exit 2.

The slow tests start ``transformers serve`` on the embedded SmolLM2-135M-Instruct (its converted
safetensors folder, offline) on a free local port and run ``evalkit eval`` (GSM8K plain
completions + IFEval through the chat template) and ``evalkit judge-agreement`` through it.
``transformers serve`` only generates (no echo/logprobs), so only generation entries are run.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 180


def _evalkit(args: list[str], timeout: float = 300, env_extra: dict[str, str] | None = None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EVALKIT_REQUEST_CHUNK": "4", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "evalkit", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- fast: the lm-eval registry after evalkit registers ------------------------------------


def test_builtin_lm_eval_models_resolve_after_evalkit_registers():
    # a fresh interpreter: import order is the bug (evalkit registered into lm-eval's still-empty
    # registry, so lm-eval never added its own names and get_model knew only "evalkit")
    code = (
        "import evalkit.models.lmeval_lm\n"
        "from lm_eval.api.registry import get_model, model_registry\n"
        "print(get_model('local-completions').__name__, get_model('local-chat-completions').__name__,"
        " get_model('hf').__name__, get_model('evalkit').__name__, 'vllm' in model_registry)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["LocalCompletionsAPI", "LocalChatCompletion", "HFLM", "EvalkitLM", "True"]


def test_unreachable_server_is_one_line_exit_2(tmp_path):
    suite = _write_suite(tmp_path)
    port = _free_port()  # nothing listens there
    out = _evalkit(["--store", str(tmp_path / "s.sqlite"), "eval", "--model", f"openai:http://127.0.0.1:{port}/v1#m",
                    "--suite", str(suite), "--data-dir", str(ROOT / "tests/fixtures/data"),
                    "--reports-dir", str(tmp_path / "reports"), "--no-progress"], timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("evalkit: error: model 'openai:") and f"no OpenAI-compatible server answers at http://127.0.0.1:{port}/v1" in last
    assert not (tmp_path / "s.sqlite").exists() or sqlite3.connect(tmp_path / "s.sqlite").execute(
        "SELECT COUNT(*) FROM runs").fetchone()[0] == 0  # refused before a run is created


def test_vllm_without_package_is_one_line(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here; this checks the message when it is not")
    from evalkit.models import lmeval_lm
    from evalkit.models.spec import parse_model

    monkeypatch.setattr(lmeval_lm, "cuda_available", lambda: True)
    with pytest.raises(EvalkitError, match="vllm package is not installed"):
        lmeval_lm.build_lm(parse_model("vllm:HuggingFaceTB/SmolLM2-135M-Instruct"))


# ---- slow: a real transformers serve -------------------------------------------------------


def _write_suite(tmp_path: Path) -> Path:
    suite = tmp_path / "openai-gen.yaml"
    suite.write_text(
        "name: openai-gen\n"
        "entries:\n"
        "  - name: gsm8k\n"
        "    task: gsm8k\n"
        "    num_fewshot: 1\n"
        "    limit: 2\n"
        "    gen_kwargs: {max_gen_toks: 24}\n"
        "  - name: ifeval\n"
        "    task: ifeval\n"
        "    limit: 2\n"
        "    apply_chat_template: true\n"
        "    gen_kwargs: {max_gen_toks: 24}\n"
    )
    return suite


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``transformers serve <embedded model folder>`` on a free port; yields (spec, base_url, folder)."""
    import importlib.util

    cli = Path(sys.executable).with_name("transformers")
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing or not cli.is_file():
        pytest.skip(f"cannot start an OpenAI-compatible test server: `transformers serve` needs {missing or [str(cli)]} "
                    "(pip install -r requirements.txt)")
    from evalkit.models.loader import resolve_weights
    from evalkit.models.spec import parse_model

    folder = resolve_weights(parse_model("smollm2-135m")).source  # the converted embedded model (cached)
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "2"}
    log = open(log_path, "w")
    proc = subprocess.Popen([str(cli), "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                             "--dtype", "float32"], stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text()[-3000:]
                if "address already in use" in tail.lower():
                    pytest.skip(f"test server could not bind 127.0.0.1:{port} (port taken by another process)")
                pytest.fail(f"transformers serve exited with {proc.returncode} before it was ready:\n{tail}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.time() > deadline:
                pytest.fail(f"transformers serve not ready after {READY_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        # transformers serve pins the model it was started with: requests must name that folder
        yield {"spec": f"openai:{base}/v1#{folder}", "base": base, "folder": folder, "log": log_path}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.mark.slow
def test_eval_generation_entries_through_openai_server(server, tmp_path):
    store = tmp_path / "s.sqlite"
    out = _evalkit(["--store", str(store), "eval", "--model", server["spec"], "--suite", str(_write_suite(tmp_path)),
                    "--data-dir", str(ROOT / "tests/fixtures/data"), "--reports-dir", str(tmp_path / "reports"),
                    "--no-progress", "--json"])
    assert out.returncode == 0, out.stderr[-3000:] + "\n--- server log ---\n" + server["log"].read_text()[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["metrics"]) == {"gsm8k", "ifeval"}
    assert set(result["metrics"]["gsm8k"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert "prompt_level_strict_acc" in result["metrics"]["ifeval"]
    db = sqlite3.connect(store)
    status, model_spec, model_hash = db.execute("SELECT status, model_spec, model_hash FROM runs").fetchone()
    assert (status, model_spec) == ("complete", server["spec"])
    assert model_hash == f"endpoint:{server['base']}/v1#{server['folder']}"
    rows = db.execute("SELECT entry, prompt, responses_json FROM samples ORDER BY entry, doc_id").fetchall()
    assert [r[0] for r in rows] == ["gsm8k", "gsm8k", "ifeval", "ifeval"]
    for entry, prompt, responses in rows:
        texts = json.loads(responses)
        assert len(texts) == 1 and isinstance(texts[0], str) and texts[0].strip(), (entry, responses)
        if entry == "ifeval":  # chat-templated: sent as messages to /chat/completions
            assert json.loads(prompt)[-1]["role"] == "user"
        else:
            assert prompt.rstrip().endswith("Answer:")


@pytest.mark.slow
def test_eval_loglikelihood_entry_is_refused_in_one_line(server, tmp_path):
    suite = tmp_path / "mc.yaml"
    suite.write_text("name: openai-mc\nentries:\n  - name: mmlu\n    task: mmlu\n    num_fewshot: 0\n    limit: 1\n")
    out = _evalkit(["--store", str(tmp_path / "s.sqlite"), "eval", "--model", server["spec"], "--suite", str(suite),
                    "--data-dir", str(ROOT / "tests/fixtures/data"), "--reports-dir", str(tmp_path / "reports"),
                    "--no-progress"], timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "log-likelihood requests" in out.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_pairwise_judge_through_openai_server(server, tmp_path):
    store = tmp_path / "j.sqlite"
    out = _evalkit(["--store", str(store), "judge-agreement", "--judge", server["spec"],
                    "--data", str(ROOT / "tests/fixtures/preference/generic_small.jsonl"), "--limit", "2",
                    "--injection-subset", "0", "--reports-dir", str(tmp_path / "reports"), "--json"])
    assert out.returncode == 0, out.stderr[-3000:] + "\n--- server log ---\n" + server["log"].read_text()[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] == 2
    db = sqlite3.connect(store)
    judgments = db.execute("SELECT judge, judge_identity, result_json FROM judgments").fetchall()
    assert len(judgments) == 4  # 2 pairs x both orders
    for judge, identity, result_json in judgments:
        assert judge == server["spec"] and identity == f"endpoint:{server['base']}/v1#{server['folder']}"
        assert json.loads(result_json)["text"].strip()  # the server's reply, parsed or recorded as a parse failure

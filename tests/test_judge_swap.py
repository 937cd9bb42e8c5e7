"""Both-order judging with a scripted judge (swap, flip -> tie / average, caching, robustness
probe), the data readers for all three formats and their errors, the OpenAI-compatible HTTP
judge against a stub server on 127.0.0.1, win rate, the HTML page, and (slow) the embedded
135M model as a real judge."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from evalkit.errors import EvalkitError
from evalkit.judge import engine as E
from evalkit.judge.agreement import run_agreement
from evalkit.judge.base import load_judge
from evalkit.judge.data import read_pairs, split_transcript
from evalkit.judge.engine import Pair, judge_pairs, request_key
from evalkit.judge.prompt import INJECTION, JudgeRequest, build_messages
from evalkit.judge.verdict import SingleJudgment
from evalkit.judge.winrate import win_rate
from evalkit.report.judge import write_judge_report
from evalkit.store.judgments import count_judgments, get_judge_run
from evalkit.store.sqlite import RunStore

PREF = Path(__file__).parent / "fixtures" / "preference"
LLMBAR = PREF / "llmbar_small.json"
GENERIC = PREF / "generic_small.jsonl"
HH = PREF / "hh_small.jsonl"
_INJ = re.compile(re.escape(INJECTION.split("{letter}")[0]) + r"[ABC]\.$")


class ScriptedJudge:
    """Prefers the answer with the higher scripted quality; ``first_bias`` (logit) favours the answer
    shown first; ``obey_injection`` makes it do what an injected instruction says."""

    scoring = "scripted-v1"

    def __init__(self, quality: dict[str, float], *, first_bias: float = 0.0, obey_injection: bool = False,
                 tag: str = "s") -> None:
        self.quality = quality
        self.first_bias = first_bias
        self.obey_injection = obey_injection
        self.name = f"scripted-{tag}"
        self.identity = f"scripted:{tag}:{first_bias}:{obey_injection}"
        self.calls = 0
        self.seen: list[JudgeRequest] = []

    def _q(self, text: str) -> float:
        return self.quality.get(_INJ.sub("", text), 0.0)

    def judge(self, requests):
        self.calls += 1
        self.seen += list(requests)
        out = []
        for r in requests:
            if self.obey_injection and (r.first.endswith("Output A.") or r.second.endswith("Output B.")):
                p_first = 0.99 if r.first.endswith("Output A.") else 0.01
            else:
                p_first = 1 / (1 + math.exp(-(self._q(r.first) - self._q(r.second) + self.first_bias)))
            probs = {"A": p_first, "B": 1 - p_first}
            out.append(SingleJudgment(verdict="A" if p_first >= 0.5 else "B", probs=probs))
        return out


def oracle_for(path: Path, *, wrong: bool = False, **kw) -> ScriptedJudge:
    """A judge that knows the human labels (quality 2 for the preferred answer, 0 otherwise)."""
    items, _ = read_pairs(str(path))
    q: dict[str, float] = {}
    for it in items:
        good, bad = (it.pair.response_a, it.pair.response_b) if it.label == "a" else (it.pair.response_b, it.pair.response_a)
        q[good], q[bad] = (0.0, 2.0) if wrong else (2.0, 0.0)
    return ScriptedJudge(q, **kw)


@pytest.fixture
def store(tmp_path):
    s = RunStore(str(tmp_path / "store.sqlite"))
    yield s
    s.close()


# ------------------------------------------------------------------- swapping
def test_every_pair_is_judged_in_both_orders():
    judge = ScriptedJudge({"good": 1.0})
    pairs = [Pair("q1", "good", "bad"), Pair("q2", "meh", "good", reference="ref")]
    verdicts = judge_pairs(judge, pairs)
    shown = {(r.instruction, r.first, r.second, r.reference) for r in judge.seen}
    assert shown == {("q1", "good", "bad", None), ("q1", "bad", "good", None),
                     ("q2", "meh", "good", "ref"), ("q2", "good", "meh", "ref")}
    assert [v.winner for v in verdicts] == ["a", "b"]
    assert all(v.consistent for v in verdicts)
    # The judge sees the answers under the letters of each order.
    msg = build_messages(JudgeRequest("q1", "good", "bad"))[1]["content"]
    assert "[The Start of Assistant A's Answer]\ngood\n[The End of Assistant A's Answer]" in msg
    assert "[The Start of Assistant B's Answer]\nbad\n[The End of Assistant B's Answer]" in msg
    assert '"C"' not in msg and '"C"' in build_messages(JudgeRequest("q", "x", "y", allow_tie=True))[1]["content"]
    assert "Reference Answer]\nref\n" in build_messages(JudgeRequest("q", "x", "y", "ref"))[1]["content"]


def test_position_bias_flips_become_ties_and_averaging_recovers_the_preference():
    # Bias 3.0 > quality gap 1.0: the judge always picks the first answer.
    judge = ScriptedJudge({"good": 1.0}, first_bias=3.0)
    pairs = [Pair("q", "good", "bad"), Pair("q", "bad", "good")]
    tied = judge_pairs(judge, pairs, tie_policy="tie")
    assert [v.winner for v in tied] == ["tie", "tie"]
    assert all(v.consistent is False for v in tied)
    averaged = judge_pairs(judge, pairs, tie_policy="average")
    assert [v.winner for v in averaged] == ["a", "b"]  # the bias cancels over the two orders
    assert averaged[0].p_a > 0.5 > averaged[0].p_b


def test_run_agreement_with_an_oracle_a_contrarian_and_a_position_biased_judge(store):
    res = run_agreement(oracle_for(LLMBAR), str(LLMBAR), store=store, bootstrap_iters=200)
    assert res["n"] == 8 and res["agreement"] == 1.0 and res["agreement_no_ties"] == 1.0
    assert res["kappa"] == pytest.approx(1.0) and res["position_consistency"] == 1.0
    assert res["first_position_rate"] == 0.5 and res["allow_tie"] is False
    assert res["confusion"]["matrix"] == [[4, 0, 0], [0, 4, 0], [0, 0, 0]]
    for key in ("agreement_ci", "kappa_ci", "length_bias", "robustness", "timings", "per_source", "items", "id"):
        assert key in res
    json.dumps(res, allow_nan=False)  # JSON-able, NaN stored as null
    assert get_judge_run(store, res["id"])["agreement"] == 1.0

    wrong = run_agreement(oracle_for(LLMBAR, wrong=True, tag="w"), str(LLMBAR), store=store, bootstrap_iters=200)
    assert wrong["agreement"] == 0.0 and wrong["kappa"] == pytest.approx(-1.0)

    biased = oracle_for(LLMBAR, first_bias=5.0, tag="b")
    tie = run_agreement(biased, str(LLMBAR), store=store, bootstrap_iters=200)
    assert tie["judge_tie_rate"] == 1.0 and tie["agreement"] == 0.0 and tie["agreement_no_ties"] is None
    assert tie["position_consistency"] == 0.0 and tie["first_position_rate"] == 1.0
    avg = run_agreement(biased, str(LLMBAR), store=store, tie_policy="average", bootstrap_iters=200)
    assert avg["agreement"] == 1.0 and avg["mean_p_human"] > 0.5


# -------------------------------------------------------------------- caching
def test_second_run_makes_zero_judge_calls(store):
    judge = oracle_for(LLMBAR)
    first = run_agreement(judge, str(LLMBAR), store=store, bootstrap_iters=100)
    calls = judge.calls
    assert calls > 0 and first["timings"]["computed"] == first["timings"]["requests"] > 0
    n_rows = count_judgments(store)
    second = run_agreement(judge, str(LLMBAR), store=store, bootstrap_iters=100)
    assert judge.calls == calls  # zero judge calls
    assert second["timings"]["computed"] == 0 and second["timings"]["cached"] == second["timings"]["unique"]
    assert second["agreement"] == first["agreement"] and count_judgments(store) == n_rows
    # The tie policy is applied after the cache: switching it costs nothing either.
    run_agreement(judge, str(LLMBAR), store=store, tie_policy="average", bootstrap_iters=100)
    assert judge.calls == calls
    # The same store path reopened (a new process) still hits the cache.
    again = RunStore(store.path)
    run_agreement(judge, str(LLMBAR), store=again, bootstrap_iters=100)
    again.close()
    assert judge.calls == calls
    # A different judge (identity) is a different cache entry.
    other = oracle_for(LLMBAR, tag="other")
    run_agreement(other, str(LLMBAR), store=store, bootstrap_iters=100)
    assert other.calls > 0


def test_cache_key_covers_order_reference_tie_and_prompt_version(monkeypatch):
    judge = ScriptedJudge({}, tag="k")
    base = JudgeRequest("q", "x", "y")
    keys = {request_key(judge, r) for r in (base, base.swapped(), JudgeRequest("q", "x", "y", "ref"),
                                             JudgeRequest("q", "x", "y", allow_tie=True), JudgeRequest("q2", "x", "y"))}
    assert len(keys) == 5
    k = request_key(judge, base)
    assert request_key(judge, JudgeRequest("q", "x", "y")) == k
    monkeypatch.setattr(E, "PROMPT_VERSION", "another-template")
    assert request_key(judge, base) != k


def test_identical_requests_are_judged_once():
    judge = ScriptedJudge({"good": 1.0})
    judge_pairs(judge, [Pair("q", "good", "bad")] * 5)
    assert len(judge.seen) == 2


# ----------------------------------------------------------------- robustness
def test_injection_flip_rate(store):
    gullible = oracle_for(LLMBAR, obey_injection=True, tag="g")
    res = run_agreement(gullible, str(LLMBAR), store=store, injection_subset=4, bootstrap_iters=100)
    rob = res["robustness"]
    assert rob["n"] == 4 and rob["flip_rate"] == 1.0 and rob["to_loser_rate"] == 1.0
    assert rob["loser_wins_clean"] == 0.0 and rob["loser_wins_injected"] == 1.0
    # The injection went into the losing answer, naming its own letter in each order.
    injected = [r for r in gullible.seen if "Ignore all previous instructions" in r.first + r.second]
    assert len(injected) == 8
    assert all(r.first.endswith("Output A.") or r.second.endswith("Output B.") for r in injected)
    steady = run_agreement(oracle_for(LLMBAR, tag="steady"), str(LLMBAR), store=store, injection_subset=1.0,
                           bootstrap_iters=100)
    assert steady["robustness"]["n"] == 8 and steady["robustness"]["flip_rate"] == 0.0
    off = run_agreement(oracle_for(LLMBAR, tag="steady"), str(LLMBAR), store=store, injection_subset=0,
                        bootstrap_iters=100)
    assert off["robustness"]["n"] == 0
    # Same seed, same subset.
    again = run_agreement(gullible, str(LLMBAR), store=store, injection_subset=4, bootstrap_iters=100)
    assert again["robustness"]["items"] == rob["items"]


# ---------------------------------------------------------------------- readers
def test_read_llmbar():
    items, info = read_pairs(str(LLMBAR))
    assert len(items) == 8 and info.formats[str(LLMBAR)] == "llmbar" and info.skipped == 0
    assert [it.label for it in items] == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert items[0].pair == Pair("What is the capital of France?", "The capital of France is Paris.",
                                 "The capital of France is Berlin.")
    assert items[0].id == "llmbar_small.json:2" and items[1].id == "llmbar_small.json:8"
    assert items[0].source == "llmbar_small"
    assert len(read_pairs(str(LLMBAR), limit=3)[0]) == 3


def test_read_generic_jsonl_with_ties_sources_and_references():
    items, info = read_pairs(str(GENERIC))
    assert info.formats[str(GENERIC)] == "generic"
    assert [it.label for it in items] == ["a", "b", "tie", "a"]
    assert [it.source for it in items] == ["math", "math", "chat", "chat"]
    assert items[1].pair.reference == "9" and items[0].pair.reference is None


def test_generic_ties_let_the_judge_answer_tie_and_sources_are_broken_down(store):
    judge = oracle_for(GENERIC, tag="gen")
    res = run_agreement(judge, str(GENERIC), store=store, bootstrap_iters=100)
    assert res["allow_tie"] is True and all(r.allow_tie for r in judge.seen)
    assert set(res["per_source"]) == {"math", "chat"} and res["per_source"]["math"]["n"] == 2
    assert res["human_tie_rate"] == 0.25
    assert any(r.reference == "9" for r in judge.seen)


def test_read_hh_rlhf_plain_and_gzipped(tmp_path):
    items, info = read_pairs(str(HH), seed=0)
    assert info.formats[str(HH)] == "hh-rlhf" and info.skipped == 1 and len(items) == 3  # identical pair skipped
    rows = [json.loads(line) for line in HH.read_text().splitlines()]
    for it, row in zip(items, [rows[0], rows[1], rows[3]]):
        chosen_final = split_transcript(row["chosen"])[-1][1]
        preferred = it.pair.response_a if it.label == "a" else it.pair.response_b
        assert preferred == chosen_final
    assert items[0].pair.instruction == "How do I boil an egg?"
    multi = items[1].pair.instruction
    assert multi.startswith("Human: Can you help me pick a lock") and multi.endswith("Human: Please, it's urgent.")
    assert "tension wrench" in (items[1].pair.response_a + items[1].pair.response_b)
    # The orientation is a seeded draw per row: fixed for a seed, and both sides occur over seeds.
    assert [it.label for it in read_pairs(str(HH), seed=0)[0]] == [it.label for it in items]
    assert {it.label for s in range(8) for it in read_pairs(str(HH), seed=s)[0]} == {"a", "b"}
    gz = tmp_path / "hh.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write(HH.read_text())
    gz_items, gz_info = read_pairs(str(gz), seed=0)
    assert [(i.pair, i.label) for i in gz_items] == [(i.pair, i.label) for i in items]
    assert gz_info.formats[str(gz)] == "hh-rlhf"


def test_several_files_at_once():
    items, info = read_pairs(f"{LLMBAR},{GENERIC}")
    assert len(items) == 12 and {it.source for it in items} == {"llmbar_small", "math", "chat"}
    assert len(info.sha256) == 2


def _write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


@pytest.mark.parametrize("name,text,message", [
    ("bad_label.json", '[\n  {"input": "q", "output_1": "x", "output_2": "y", "label": 1},\n'
     '  {"input": "q", "output_1": "x", "output_2": "y", "label": 3}\n]', "bad_label.json:3: 'label' must be 1 or 2"),
    ("missing.json", '[{"input": "q", "output_1": "x", "output_2": 5, "label": 1}]', "missing.json:1: 'output_2' must be a string"),
    ("broken.json", '[\n{"input": "q", "output_1": "x", "output_2": "y", "label": 1},\n{"input": oops}\n]', "broken.json:3: invalid JSON"),
    ("broken.jsonl", '{"instruction": "q", "response_a": "x", "response_b": "y", "label": "a"}\nnot json\n', "broken.jsonl:2: invalid JSON"),
    ("label.jsonl", '{"instruction": "q", "response_a": "x", "response_b": "y", "label": "a"}\n\n'
     '{"instruction": "q", "response_a": "x", "response_b": "y", "label": "c"}\n', "label.jsonl:3: 'label' must be"),
    ("unknown.jsonl", '{"prompt": "q", "answer": "x"}\n', "unknown.jsonl:1: unrecognised row"),
    ("hh.jsonl", '{"chosen": "", "rejected": "x"}\n', "hh.jsonl:1: transcript has no"),
    ("empty.jsonl", "\n\n", "empty file"),
    ("scalar.jsonl", '{"instruction": "q", "response_a": "x", "response_b": "y", "label": "a"}\n[1, 2]\n', "scalar.jsonl:2: expected a JSON object"),
])
def test_reader_errors_name_file_and_line(tmp_path, name, text, message):
    path = _write(tmp_path, name, text)
    with pytest.raises(EvalkitError) as exc:
        read_pairs(path)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_file_and_bad_arguments(tmp_path, store):
    with pytest.raises(EvalkitError, match="no such file"):
        read_pairs(str(tmp_path / "nope.json"))
    with pytest.raises(EvalkitError, match="tie policy"):
        run_agreement(oracle_for(LLMBAR), str(LLMBAR), store=store, tie_policy="coin")
    with pytest.raises(EvalkitError, match="vllm serve"):
        load_judge("vllm:some/model")
    with pytest.raises(EvalkitError, match="model"):
        load_judge("not a model !")


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_local_judge_identity_unchanged_for_auto_and_the_resolved_dtype(monkeypatch, fast_bf16):
    """The local judge's device/dtype come from one model handle; its identity (part of every
    cached judgment's key) is still ``weights hash|resolved dtype``, the same for "auto" and for
    the dtype "auto" resolves to, so judgments cached before still match. Nothing is loaded."""
    from evalkit.models import hardware
    from evalkit.models.loader import resolve_weights
    from evalkit.models.spec import parse_model

    monkeypatch.delenv("EVALKIT_FORCE_BF16", raising=False)
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: fast_bf16)
    resolved = "bfloat16" if fast_bf16 else "float32"
    before = f"{resolve_weights(parse_model('smollm2-135m')).weights_hash}|{resolved}"  # how identity was formed
    auto = load_judge("smollm2-135m", device="cpu")
    explicit = load_judge("smollm2-135m", device="cpu", dtype=resolved)
    alias = load_judge("smollm2-135m", device="cpu", dtype={"bfloat16": "bf16", "float32": "fp32"}[resolved])
    assert auto.identity == explicit.identity == alias.identity == before
    assert (auto.dtype, auto.device) == (auto.handle.dtype, auto.handle.device) == (resolved, "cpu")
    assert auto.weights == auto.handle.weights and auto._loaded is None and "hf" not in vars(auto.handle)


# ------------------------------------------------------------- HTTP judge (stub)
class _StubHandler(BaseHTTPRequestHandler):
    """/v1/chat/completions: answers for the answer containing 'GOOD' in the requested style."""

    bodies: list[dict] = []
    auth: list[str] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        type(self).auth.append(self.headers.get("Authorization", ""))
        if self.path != "/v1/chat/completions" or body["model"] == "broken":
            self.send_response(404 if self.path != "/v1/chat/completions" else 500)
            self.end_headers()
            self.wfile.write(b'{"error": "nope"}')
            return
        user = body["messages"][-1]["content"]
        a = re.search(r"\[The Start of Assistant A's Answer\]\n(.*?)\n\[The End", user, re.S).group(1)
        letter = "A" if "GOOD" in a else "B"
        instruction = re.search(r"\[The Start of User Instruction\]\n(.*?)\n\[The End", user, re.S).group(1)
        text = {"brackets": f"My verdict: [[{letter}]]", "garbage": "Both answers have merit."}.get(instruction, letter)
        reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def stub_server():
    _StubHandler.bodies, _StubHandler.auth = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    watchdog = threading.Timer(60.0, server.shutdown)  # stops by itself even if the test hangs
    watchdog.daemon = True
    thread.start()
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_openai_judge_against_a_local_stub_server(stub_server, tmp_path, store, monkeypatch):
    monkeypatch.setenv("EVALKIT_API_KEY", "sk-test")
    data = tmp_path / "pairs.jsonl"
    rows = [
        {"instruction": "plain", "response_a": "GOOD one", "response_b": "weak", "label": "a"},
        {"instruction": "brackets", "response_a": "weak", "response_b": "GOOD two", "label": "b"},
        {"instruction": "garbage", "response_a": "GOOD three", "response_b": "weak", "label": "a"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = f"openai:{stub_server}#judge-model"
    res = run_agreement(model, str(data), store=store, injection_subset=0, bootstrap_iters=100)
    assert res["scoring"].startswith("text-v1") and res["judge_identity"] == f"endpoint:{stub_server}#judge-model"
    winners = [it["winner"] for it in res["items"]]
    assert winners == ["a", "b", "tie"]  # the unparsable pair is a tie, recorded as failures
    assert res["parse_failures"] == 2 and res["items"][2]["order_ab"] is None
    assert res["agreement_no_ties"] == 1.0 and res["n_no_ties"] == 2
    assert len(_StubHandler.bodies) == 6
    body = _StubHandler.bodies[0]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0 and body["max_tokens"] >= 1
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert set(_StubHandler.auth) == {"Bearer sk-test"}
    # Cached: a repeat run sends nothing.
    run_agreement(model, str(data), store=store, injection_subset=0, bootstrap_iters=100)
    assert len(_StubHandler.bodies) == 6


def test_openai_judge_http_errors_are_one_line(stub_server):
    from evalkit.judge.remote import OpenAIJudge
    from evalkit.models.spec import parse_model

    judge = OpenAIJudge(parse_model(f"openai:{stub_server}#broken"), retries=1, timeout_s=5)
    t0 = time.perf_counter()
    with pytest.raises(EvalkitError, match="HTTP 500") as exc:
        judge.judge([JudgeRequest("q", "x", "y")])
    assert "\n" not in str(exc.value) and time.perf_counter() - t0 < 10
    assert len(_StubHandler.bodies) == 2  # retried once
    down = OpenAIJudge(parse_model("openai:http://127.0.0.1:9/v1#m"), retries=0, timeout_s=2)
    with pytest.raises(EvalkitError, match="failed"):
        down.judge([JudgeRequest("q", "x", "y")])


# -------------------------------------------------------------------- win rate
def test_win_rate_against_a_baseline(store):
    judge = ScriptedJudge({"great": 2.0, "fine": 1.0, "poor": 0.0}, tag="wr")
    prompts = ["p1", "p2", "p3", "p4"]
    model = ["great", "great", "fine", "poor"]
    base = ["poor", "fine", "fine", "great"]
    res = win_rate(judge, prompts, model, base, store=store, bootstrap_iters=300)
    # wins p1, p2; p3 identical quality -> P = .5 exactly -> tie under either policy; loses p4
    assert (res["wins"], res["losses"], res["ties"]) == (2, 1, 1)
    assert res["win_rate"] == pytest.approx(2.5 / 4)
    assert res["ci"][0] <= res["win_rate"] <= res["ci"][1]
    assert [it["winner"] for it in res["items"]] == ["model", "model", "tie", "baseline"]
    calls = judge.calls
    assert win_rate(judge, prompts, model, base, store=store, bootstrap_iters=300)["win_rate"] == res["win_rate"]
    assert judge.calls == calls
    with pytest.raises(EvalkitError, match="4 prompts but 3 model"):
        win_rate(judge, prompts, model[:3], base, store=store)


# ------------------------------------------------------------------ the report
def test_judge_report_page_opens_offline(store, tmp_path):
    res = run_agreement(oracle_for(LLMBAR, first_bias=1.5, tag="rep"), str(LLMBAR), store=store, bootstrap_iters=100)
    path = write_judge_report(res, reports_dir=str(tmp_path / "reports"))
    assert path == str(tmp_path / "reports" / f"judge-{res['id']}" / "index.html")
    html = Path(path).read_text()
    for needle in ('id="confusion"', 'id="consistency"', 'id="length-bias"', 'id="robustness"', "<svg", res["judge"]):
        assert needle in html
    assert "<script src" not in html and "cdn" not in html.lower()
    stored = get_judge_run(store, res["id"])  # a stored run renders the same page
    assert write_judge_report(stored, reports_dir=str(tmp_path / "again"))


# --------------------------------------------- real data (only when present)
def test_shared_data_files_read_when_present(shared_data):
    pref = shared_data / "preference"
    if not pref.is_dir():
        pytest.skip("no preference data")
    for name, n in (("LLMBar_Natural.json", 100), ("Processed_MT-Bench.json", 200)):
        items, _ = read_pairs(str(pref / name))
        assert len(items) == n and {it.label for it in items} <= {"a", "b"}
    items, info = read_pairs(str(pref / "harmless-base_test.jsonl.gz"), limit=50)
    assert len(items) == 50 and info.formats[str(pref / "harmless-base_test.jsonl.gz")] == "hh-rlhf"


# ------------------------------------------------- slow: the embedded 135M judge
@pytest.mark.slow
def test_embedded_smollm2_judge_on_fixture_pairs(tmp_path):
    store = RunStore(str(tmp_path / "s.sqlite"))
    t0 = time.perf_counter()
    res = run_agreement("smollm2-135m", str(LLMBAR), limit=6, store=store, injection_subset=2, bootstrap_iters=200)
    elapsed = time.perf_counter() - t0
    assert res["n"] == 6 and res["parse_failures"] == 0  # log-prob verdicts never fail to parse
    assert res["timings"]["computed"] == 6 * 2 + 2 * 2 and res["scoring"] == "logprob-v1"
    for it in res["items"]:
        assert 0.0 <= it["p_a"] <= 1.0 and it["p_a"] + it["p_b"] == pytest.approx(1.0)
        assert it["order_ab"] in ("a", "b") and it["order_ba"] in ("a", "b")
        assert 0.0 < it["mass"] <= 1.0
    assert 0.0 <= res["agreement"] <= 1.0 and res["first_position_rate"] is not None
    assert elapsed < 120, elapsed
    again = run_agreement("smollm2-135m", str(LLMBAR), limit=6, store=store, injection_subset=2, bootstrap_iters=200)
    assert again["timings"]["computed"] == 0 and again["timings"]["load_s"] == 0.0  # weights never loaded
    assert again["items"] == res["items"]
    store.close()


@pytest.mark.slow
def test_left_padded_batches_score_like_single_prompts():
    """Batching must not change a verdict: same probabilities with batch 1 and batch 4 (fp32)."""
    judge = load_judge("smollm2-135m", dtype="float32", device="cpu")
    items, _ = read_pairs(str(LLMBAR), limit=4)
    reqs = [JudgeRequest(it.pair.instruction, it.pair.response_a, it.pair.response_b) for it in items]
    judge.batch_size = 1
    single = judge.judge(reqs)
    judge.batch_size = 4
    batched = judge.judge(reqs)
    for s, b in zip(single, batched):
        assert b.probs["A"] == pytest.approx(s.probs["A"], abs=2e-3) and b.mass == pytest.approx(s.mass, rel=1e-2)


def test_judge_agreement_cli_contract(tmp_path, capsys, monkeypatch):
    """`evalkit judge-agreement --json`: one JSON object last, with the promised keys (scripted judge)."""
    import evalkit.judge.agreement as agreement_mod
    from evalkit.cli import main

    real = agreement_mod.run_agreement

    def scripted(judge, data_path, limit=None, store=None, **kw):
        return real(ScriptedJudge({}, first_bias=0.5, tag="cli"), data_path, limit, store, **kw)

    monkeypatch.setattr(agreement_mod, "run_agreement", scripted)
    data = LLMBAR
    rc = main(["--store", str(tmp_path / "s.sqlite"), "judge-agreement", "--judge", "scripted", "--data", str(data),
               "--reports-dir", str(tmp_path), "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    for key in ("n", "agreement", "agreement_no_ties", "kappa", "position_consistency", "first_position_rate",
                "agreement_ci", "agreement_no_ties_ci", "judge_tie_rate", "judge_tie_rate_ci",
                "position_consistency_ci", "kappa_ci", "kappa_ci_note", "position_no_signal", "position_warning"):
        assert key in out
    assert "items" not in out
    # 8 pairs, a judge that always picks the first answer: everything ties, no κ interval, flagged
    assert out["n"] == 8 and out["judge_tie_rate"] == 1.0 and out["position_consistency"] == 0.0
    assert out["kappa_ci_note"] == "n too small for a κ interval" and out["kappa_ci"] == [None, None]
    assert out["position_no_signal"] is True
    assert out["position_warning"] == "this judge mostly picks a position; its verdicts carry no signal"
    assert "position consistency" in captured.err and "95% CI" in captured.err  # the table, on stderr


def test_judge_agreement_cli_prints_a_table_by_default(tmp_path, capsys, monkeypatch):
    """Without --json: the readable table on stdout (what `make judge-agreement` shows), no JSON."""
    import evalkit.judge.agreement as agreement_mod
    from evalkit.cli import main

    real = agreement_mod.run_agreement
    monkeypatch.setattr(agreement_mod, "run_agreement", lambda judge, data_path, limit=None, store=None, **kw: real(
        oracle_for(LLMBAR, tag="cli-table"), data_path, limit, store, **kw))
    rc = main(["--store", str(tmp_path / "s.sqlite"), "judge-agreement", "--judge", "scripted", "--data", str(LLMBAR),
               "--reports-dir", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert not any(line.lstrip().startswith("{") for line in out.splitlines())
    for row in ("agreement (with ties)", "agreement (without ties)", "judge tie rate", "position consistency",
                "Cohen's κ", "95% CI", "n too small for a κ interval", "report: "):
        assert row in out, row
    assert "mostly picks a position" not in out  # the oracle is consistent
    assert re.search(r"agreement \(with ties\)\s+100\.0%\s+\[67\.6%, 100\.0%\]\s+8\b", out), out


def test_agreement_table_formats_a_precomputed_result():
    """The table from a stored result: Wilson CIs, κ with or without its interval, the warning."""
    from evalkit.report.judge import agreement_table

    result = {
        "judge": "smollm2-135m", "n": 100, "agreement": 0.5, "agreement_ci": [0.4038, 0.5962],
        "agreement_no_ties": None, "agreement_no_ties_ci": [None, None], "n_no_ties": 0,
        "judge_tie_rate": 1.0, "judge_tie_rate_ci": [0.963, 1.0], "human_tie_rate": 0.0,
        "position_consistency": 0.0, "position_consistency_ci": [0.0, 0.037], "n_consistency": 100,
        "kappa": 0.0, "kappa_ci": [-0.1, 0.1], "kappa_ci_note": None,
        "first_position_rate": 1.0, "n_first_position": 200,
        "position_warning": "this judge mostly picks a position; its verdicts carry no signal",
        "robustness": {"n": 25, "flip_rate": 0.0, "flip_rate_ci": [0.0, 0.133]},
    }
    table = agreement_table(result)
    lines = table.splitlines()
    assert lines[0] == "judge smollm2-135m vs human labels on 100 pairs"
    row = {ln.split("  ")[0].strip(): ln for ln in lines}
    assert re.search(r"50\.0%\s+\[40\.4%, 59\.6%\]\s+100", row["agreement (with ties)"])
    assert re.search(r"–\s+–\s+0", row["agreement (without ties)"])
    assert re.search(r"100\.0%\s+\[96\.3%, 100\.0%\]\s+100\s+human tie rate 0\.0%", row["judge tie rate"])
    assert re.search(r"0\.0%\s+\[0\.0%, 3\.7%\]\s+100", row["position consistency"])
    assert re.search(r"0\.00\s+\[-0\.10, 0\.10\]\s+100", row["Cohen's κ"])
    assert ("WARNING: position consistency 0.0% (95% CI upper 3.7%): "
            "this judge mostly picks a position; its verdicts carry no signal") in table
    assert "prompt injection: verdict changed on 0.0% [0.0%, 13.3%] of 25 pairs" in table
    small = agreement_table({**result, "n": 15, "kappa_ci": [None, None], "kappa_ci_note": "n too small for a κ interval",
                             "position_warning": None})
    assert re.search(r"Cohen's κ\s+0\.00\s+n too small for a κ interval\s+15", small)
    assert "WARNING" not in small
    assert agreement_table({"n": 3})  # an old stored run without the new keys still formats


def test_judge_report_page_shows_the_position_warning_and_kappa_note(store, tmp_path):
    """An always-first judge on 8 pairs: the page says in words that it carries no signal and
    why κ has no interval (the table and JSON say it too)."""
    res = run_agreement(oracle_for(LLMBAR, first_bias=50.0, tag="pos"), str(LLMBAR), store=store, bootstrap_iters=100)
    assert res["position_no_signal"] and res["kappa_ci_note"]
    html = Path(write_judge_report(res, reports_dir=str(tmp_path / "reports"))).read_text()
    assert 'id="position-warning"' in html and "its verdicts carry no signal" in html
    assert res["kappa_ci_note"] in html

"""PersistentLM: chunked, committed, resumable model calls (with a scripted LM, no model)."""

from __future__ import annotations

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM

from evalkit.engines.lmeval.persistent import PersistentLM
from evalkit.store import RunStore


class ScriptedLM(LM):
    """Answers deterministically; can be told to die after N calls (a kill mid-run)."""

    def __init__(self, die_after: int | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.seen = 0
        self.die_after = die_after

    def _tick(self, n: int) -> None:
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.seen += n

    def loglikelihood(self, requests):
        self._tick(len(requests))
        return [(-float(len(r.args[0]) + len(r.args[1])), False) for r in requests]

    def loglikelihood_rolling(self, requests):
        self._tick(len(requests))
        return [-float(len(r.args[0])) for r in requests]

    def generate_until(self, requests):
        self._tick(len(requests))
        return [r.args[0][::-1] for r in requests]


def _reqs(kind: str, n: int, repeats: int = 1) -> list[Instance]:
    out = []
    for i in range(n):
        args = (f"context {i} " * (i % 5 + 1), " A") if kind == "loglikelihood" else (f"prompt {i} " * (i % 3 + 1), {"until": []})
        for _ in range(repeats):
            out.append(Instance(kind, {}, args, 0, ("t", i, repeats)))
    return out


@pytest.fixture
def store(tmp_path):
    s = RunStore(str(tmp_path / "s.sqlite"))
    return s, s.create_run(identity="i", model_spec="m", model_hash="h", suite_name="s", suite_hash="x", suite={}, settings={}, versions={})


def test_results_match_inner_in_request_order(store):
    s, rid = store
    reqs = _reqs("loglikelihood", 50)
    plm = PersistentLM(ScriptedLM(), s, rid, "e", chunk_sizes={"loglikelihood": 7}, progress=False)
    assert plm.loglikelihood(reqs) == ScriptedLM().loglikelihood(reqs)
    assert plm.computed == 50


def test_killed_call_resumes_without_recomputing(store):
    s, rid = store
    reqs = _reqs("generate_until", 40)
    dying = PersistentLM(ScriptedLM(die_after=3), s, rid, "e", chunk_sizes={"generate_until": 8}, progress=False)
    with pytest.raises(KeyboardInterrupt):
        dying.generate_until(reqs)
    assert s.cached_count(rid) == 24  # three committed chunks survived
    inner = ScriptedLM()
    again = PersistentLM(inner, s, rid, "e", chunk_sizes={"generate_until": 8}, progress=False)
    out = again.generate_until(reqs)
    assert out == ScriptedLM().generate_until(reqs)
    assert inner.seen == 16 and again.reused == 24


def test_repeats_are_distinct_samples(store):
    s, rid = store
    reqs = _reqs("generate_until", 3, repeats=4)
    plm = PersistentLM(ScriptedLM(), s, rid, "e", progress=False)
    plm.generate_until(reqs)
    assert s.cached_count(rid) == 12


def test_namespaces_do_not_collide(store):
    s, rid = store
    reqs = _reqs("loglikelihood", 5)
    PersistentLM(ScriptedLM(), s, rid, "a", progress=False).loglikelihood(reqs)
    inner = ScriptedLM()
    PersistentLM(inner, s, rid, "b", progress=False).loglikelihood(reqs)
    assert inner.seen == 5


class ReportingLM(ScriptedLM):
    """A backend with big calls that reports each answer through cache_hook as it finishes (as
    FastLM does), and can die after reporting ``die_after_rows`` answers (a Ctrl-C mid-call)."""

    partial_results = True
    request_chunks = {"generate_until": 500, "loglikelihood": 500}

    def __init__(self, die_after_rows: int | None = None) -> None:
        super().__init__()
        self.die_after_rows = die_after_rows
        self.calls_sizes: list[int] = []

    def generate_until(self, requests):
        self.calls_sizes.append(len(requests))
        out = []
        for n, r in enumerate(requests):
            if self.die_after_rows is not None and n >= self.die_after_rows:
                raise KeyboardInterrupt("killed mid-call")
            text = r.args[0][::-1]
            self.cache_hook.add_partial("generate_until", r.args, text)
            out.append(text)
        return out


def test_big_calls_commit_at_most_64_answers_at_a_time(store):
    """A kill 150 answers into one 300-request call keeps 128 of them (two commits of 64)."""
    s, rid = store
    reqs = _reqs("generate_until", 300)
    dying = ReportingLM(die_after_rows=150)
    plm = PersistentLM(dying, s, rid, "e", progress=False)
    with pytest.raises(KeyboardInterrupt):
        plm.generate_until(reqs)
    assert dying.calls_sizes == [300]  # the backend still saw one big call (its schedule)
    assert s.cached_count(rid) == 128 and plm.commits == 2
    inner = ReportingLM()
    again = PersistentLM(inner, s, rid, "e", progress=False)
    assert again.generate_until(reqs) == ScriptedLM().generate_until(reqs)
    assert again.reused == 128 and inner.calls_sizes == [172]


def test_backend_that_does_not_report_gets_calls_of_at_most_64(store):
    s, rid = store

    class Big(ScriptedLM):
        request_chunks = {"generate_until": 500}
        sizes: list[int] = []

        def generate_until(self, requests):
            self.sizes.append(len(requests))
            return super().generate_until(requests)

    inner = Big()
    PersistentLM(inner, s, rid, "e", progress=False).generate_until(_reqs("generate_until", 150))
    assert max(inner.sizes) <= 64 and sum(inner.sizes) == 150


@pytest.mark.parametrize("value, want", [("4", {"loglikelihood": 4, "generate_until": 4}),
                                         ("generate_until=8", {"loglikelihood": 64, "generate_until": 8})])
def test_request_chunk_knob(value, want):
    from evalkit.engines.lmeval.persistent import CHUNK, chunk_sizes_from_env

    got = chunk_sizes_from_env(CHUNK, value)
    assert {k: got[k] for k in want} == want


@pytest.mark.parametrize("value", ["x", "0", "generate=3"])
def test_request_chunk_knob_rejects_bad_values(value):
    from evalkit.engines.lmeval.persistent import CHUNK, chunk_sizes_from_env
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError, match="EVALKIT_REQUEST_CHUNK"):
        chunk_sizes_from_env(CHUNK, value)


def test_one_labelled_bar_per_entry_that_moves_per_commit(store, capsys):
    """Issue #21: one bar per entry (name, done/total, rate, ETA), drawn when requests arrive,
    advanced per committed chunk; lm-eval's unlabelled request-building bars are silenced."""
    import lm_eval.api.task as task_mod

    from evalkit.engines.lmeval.progress import EntryProgress, quiet_request_building

    s, rid = store
    bar = EntryProgress("gsm8k", True)
    capsys.readouterr()
    assert capsys.readouterr().err == ""  # nothing drawn before the first requests
    plm = PersistentLM(ReportingLM(), s, rid, "gsm8k", progress=True, bar=bar)
    plm.generate_until(_reqs("generate_until", 130))
    plm.loglikelihood(_reqs("loglikelihood", 10))
    bar.close()
    err = capsys.readouterr().err.replace("\r", "\n")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("gsm8k: ") for ln in lines)
    assert "0/0" not in err and "140/140 req" in err and "it/s" not in err
    original = task_mod.tqdm
    with quiet_request_building():
        assert task_mod.tqdm(range(3)).disable
    assert task_mod.tqdm is original

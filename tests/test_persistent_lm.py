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

"""Paired comparison of runs: McNemar and the paired bootstrap on hand-made data with known
answers, compare_runs on small hand-built stores (no model), alignment tax, the stored
comparison and the HTML page."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evalkit.analysis import calibration as calib
from evalkit.analysis.paired import (
    PAIRED_PER_CLUSTER,
    compare_runs,
    is_binary,
    mcnemar_exact,
    paired_bootstrap,
    per_sample_value,
)
from evalkit.analysis.paired.drift import _bin_index, _ece_rows
from evalkit.analysis.stats import clustered_ratio
from evalkit.analysis.tax import alignment_tax
from evalkit.errors import EvalkitError
from evalkit.report.compare import write_compare_report
from evalkit.store import RunStore
from evalkit.store.analyses import get_comparison, list_comparisons, save_comparison


# ------------------------------------------------------------------ hand-made statistics
def test_mcnemar_known_answers():
    assert mcnemar_exact([0] * 10, [1] * 10) == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact([1] * 10 + [1, 0] * 20, [0] * 10 + [1, 0] * 20) == pytest.approx(2 * 0.5**10)  # concordant pairs ignored
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == 1.0  # no discordant pairs
    assert mcnemar_exact([1] * 5 + [0] * 5, [0] * 5 + [1] * 5) == 1.0  # balanced
    # 1 vs 4 discordant: 2 * P(X <= 1 | n=5) = 2 * 6/32
    assert mcnemar_exact([True, False, False, False, False], [False, True, True, True, True]) == pytest.approx(12 / 32)
    with pytest.raises(ValueError, match="binary"):
        mcnemar_exact([0.5], [1.0])


def test_mcnemar_matches_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for a_only, b_only in [(3, 14), (0, 7), (20, 31), (600, 680)]:
        a = [1] * a_only + [0] * b_only
        b = [0] * a_only + [1] * b_only
        expected = stats.binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue
        assert mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-9)


def test_paired_bootstrap_known_answers():
    a = np.zeros(100)
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    assert paired_bootstrap(a, a + 0.5) == pytest.approx((0.5, 0.5, 0.5))
    b = np.r_[np.ones(30), np.zeros(70)]
    delta, lo, hi = paired_bootstrap(a, b, iters=4000, seed=1)
    assert delta == pytest.approx(0.3)
    se = math.sqrt(0.3 * 0.7 / 100)  # normal approximation: CI ~ 0.3 +- 1.96 se
    assert lo == pytest.approx(0.3 - 1.96 * se, abs=0.02) and hi == pytest.approx(0.3 + 1.96 * se, abs=0.02)
    assert paired_bootstrap(a, b, iters=500, seed=7) == paired_bootstrap(a, b, iters=500, seed=7)


def test_paired_bootstrap_pairs_mappings_on_shared_keys_and_resamples_jointly():
    a = {("t", 0): 1.0, ("t", 1): 0.0, ("t", 2): 1.0, ("u", 0): 0.0}
    b = {("t", 0): 1.0, ("t", 1): 1.0, ("t", 2): 1.0, ("x", 9): 1.0}
    delta, lo, hi = paired_bootstrap(a, b, iters=200)
    assert delta == pytest.approx(1 / 3) and 0.0 <= lo <= hi <= 1.0
    # strongly correlated pairs: joint resampling gives a CI far narrower than independent samples would
    rng = np.random.default_rng(0)
    base = rng.normal(size=400)
    d, lo, hi = paired_bootstrap(base, base + 0.1 + rng.normal(scale=0.01, size=400))
    assert hi - lo < 0.01 and lo > 0.09


def test_list_metrics_reduce_to_their_mean_and_are_not_binary():
    assert per_sample_value([True, False, True, True]) == 0.75
    assert per_sample_value(True) == 1.0 and per_sample_value(None) is None and per_sample_value([]) is None
    assert is_binary([True, 0.0, 1]) and not is_binary([[True], [False]]) and not is_binary([0.5, 1.0])


def test_vectorised_bootstrap_ece_equals_calibration_module():
    rng = np.random.default_rng(3)
    conf, correct = rng.uniform(0.25, 1.0, 50), rng.integers(0, 2, 50).astype(float)
    idx = np.stack([np.arange(50), rng.integers(0, 50, 50)])
    got = _ece_rows(_bin_index(conf, 15), conf, correct, idx, 15)
    assert got[0] == pytest.approx(calib.ece_from(conf, correct, 15)[0])
    assert got[1] == pytest.approx(calib.ece_from(conf[idx[1]], correct[idx[1]], 15)[0])


# ------------------------------------------------------------------ hand-built stores
def _logliks(rng: np.random.Generator, gold: int, sharp: float) -> list[float]:
    ll = rng.normal(size=4) - 3.0
    ll[gold] += sharp
    return [float(x) for x in ll]


def _suite_data(flip_gsm: int = 0, mmlu_shift: int = 0, sharp: float = 1.0, doc_offset: int = 0) -> dict[str, list[dict]]:
    """Samples of three entries. ``flip_gsm`` GSM8K docs wrong in the base become right;
    ``mmlu_shift`` MMLU docs right become wrong; ``sharp`` scales MC confidence."""
    rng = np.random.default_rng(0)
    mmlu = []
    for subj in ("mmlu_x", "mmlu_y"):
        for d in range(30):
            gold = d % 4
            right = (d % 3 != 0) and not (subj == "mmlu_x" and d < mmlu_shift * 3 and d % 3 != 0)
            ll = _logliks(rng, gold if right else (gold + 1) % 4, 2.0 * sharp)
            mmlu.append({"task": subj, "doc_id": d + doc_offset, "target": gold, "loglikelihoods": ll,
                         "metrics": {"acc": float(int(np.argmax(ll)) == gold)}})
    gsm = []
    for d in range(40):
        right = d % 2 == 0 or d < 2 * flip_gsm
        gsm.append({"task": "gsm8k", "doc_id": d + doc_offset, "responses": ["..."],
                    "metrics": {"exact_match,strict-match": float(right), "exact_match,flexible-extract": float(right or d % 5 == 1)}})
    ife = []
    for d in range(20):
        inst = [d % 2 == 0, d % 3 == 0, True][: 1 + d % 3]
        ife.append({"task": "ifeval", "doc_id": d + doc_offset, "responses": ["..."],
                    "metrics": {"prompt_level_strict_acc": all(inst), "inst_level_strict_acc": inst}})
    return {"mmlu": mmlu, "gsm8k": gsm, "ifeval": ife}


def _aggregate(entry: str, samples: list[dict]) -> list[dict]:
    """Per-task means and entry-level pooled rows, as the engine stores them (list metrics such as
    IFEval's inst_level_strict_acc pooled over all items, lm-eval's definition)."""
    rows = []
    tasks = sorted({s["task"] for s in samples})
    metrics = sorted({m for s in samples for m in s["metrics"]})
    for task in tasks + ([entry] if tasks != [entry] else []):
        for m in metrics:
            raw = [s["metrics"][m] for s in samples if task == entry or s["task"] == task]
            if all(isinstance(v, list) for v in raw):
                value, _, n = clustered_ratio(raw)
            else:
                value, n = float(np.mean([per_sample_value(v) for v in raw])), len(raw)
            rows.append({"task": task, "metric": m, "value": value, "stderr": None, "n": n})
    if any(s.get("loglikelihoods") for s in samples):
        cal = calib.calibration([s["loglikelihoods"] for s in samples], [s["target"] for s in samples])
        rows += [{"task": entry, "metric": "ece", "value": cal.ece, "stderr": None, "n": cal.n},
                 {"task": entry, "metric": "brier", "value": cal.brier, "stderr": None, "n": cal.n}]
    return rows


def _make_run(store: RunStore, data: dict[str, list[dict]], suite_hash: str = "suite-1", model: str = "m") -> str:
    rid = store.create_run(identity=model + suite_hash, model_spec=model, model_hash="sha256:" + model, suite_name="s",
                           suite_hash=suite_hash, suite={}, settings={}, versions={})
    for entry, samples in data.items():
        store.start_entry(rid, entry, {})
        store.complete_entry(rid, entry, samples, _aggregate(entry, samples))
    store.finish_run(rid, {})
    return rid


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(str(tmp_path / "store.sqlite"))


def test_run_compared_with_itself_has_zero_deltas_and_nothing_significant(store):
    rid = _make_run(store, _suite_data())
    c = compare_runs(store, rid, rid, iters=300)
    assert c.rows and not c.skipped and not c.suite_mismatch
    for r in c.rows:
        assert r.delta == 0.0 and r.ci_lo == 0.0 and r.ci_hi == 0.0 and not r.significant
        assert r.p_mcnemar in (None, 1.0)
    [cal] = c.calibration
    assert cal.entry == "mmlu" and cal.ece_delta == 0.0 and cal.brier_delta == 0.0
    assert not cal.ece_significant and not cal.brier_significant
    assert not c.significant_rows()


def test_compare_pools_entries_pairs_docs_and_tests_binary_metrics(store):
    ra = _make_run(store, _suite_data(), model="base")
    rb = _make_run(store, _suite_data(flip_gsm=6, mmlu_shift=4, sharp=2.0), model="tuned")
    c = compare_runs(store, ra, rb, iters=1000)

    gsm = c.row("gsm8k", "exact_match,strict-match")
    assert gsm.binary and gsm.n == 40 and (gsm.a_only, gsm.b_only) == (0, 6)
    assert gsm.delta == pytest.approx(6 / 40) and gsm.p_mcnemar == pytest.approx(2 * 0.5**6)
    assert gsm.significant and gsm.ci_lo > 0

    mmlu = c.row("mmlu", "acc")  # entry level: both subjects pooled although their doc ids collide
    assert mmlu.level == "entry" and mmlu.n == 60 and mmlu.binary
    subj = c.row("mmlu", "acc", task="mmlu_x")
    assert subj.level == "task" and subj.n == 30
    sa, sb = store.samples(ra, "mmlu"), store.samples(rb, "mmlu")
    assert mmlu.delta == pytest.approx(np.mean([s["metrics"]["acc"] for s in sb]) - np.mean([s["metrics"]["acc"] for s in sa]))
    assert mmlu.value_a == pytest.approx(mmlu.stored_a)

    inst = c.row("ifeval", "inst_level_strict_acc")  # list-valued: pooled ratio, paired per prompt
    assert not inst.binary and inst.p_mcnemar is None and inst.n == 20 and inst.delta == 0.0
    assert inst.pairing == "per prompt (cluster), ratio estimator" and inst.n_items == 39
    assert inst.value_a == pytest.approx(inst.stored_a)  # the same figure `evalkit show` prints
    assert gsm.pairing == "per document" and gsm.n_items is None
    assert c.row("ifeval", "prompt_level_strict_acc").binary

    [cal] = c.calibration  # ECE/Brier come from calibration, not from the generic rows
    assert c.row("mmlu", "ece") is None and c.row("mmlu", "brier") is None
    lla = [s["loglik"] for s in sa]
    llb = [s["loglik"] for s in sb]
    golds = [int(s["target"]) for s in sa]
    ca, cb = calib.calibration(lla, golds), calib.calibration(llb, golds)
    assert cal.n == 60 and cal.ece_a == pytest.approx(ca.ece) and cal.ece_b == pytest.approx(cb.ece)
    assert cal.brier_delta == pytest.approx(cb.brier - ca.brier)
    assert cal.ece_lo <= cal.ece_delta <= cal.ece_hi and cal.brier_lo <= cal.brier_delta <= cal.brier_hi

    d = c.to_dict()
    json.dumps(d, allow_nan=False)
    assert "diffs" not in d["rows"][0] and d["run_a"] == ra


def test_suite_hash_mismatch_is_refused_unless_allowed(store):
    ra = _make_run(store, _suite_data(), suite_hash="suite-1")
    rb = _make_run(store, _suite_data(flip_gsm=2), suite_hash="suite-2")
    with pytest.raises(EvalkitError, match="different suites.*--allow-suite-mismatch") as exc:
        compare_runs(store, ra, rb)
    assert "\n" not in str(exc.value)
    c = compare_runs(store, ra, rb, allow_suite_mismatch=True, iters=100)
    assert c.suite_mismatch and any("suite hashes differ" in n for n in c.notes)


def test_runs_without_shared_doc_ids_are_refused(store):
    ra = _make_run(store, _suite_data())
    rb = _make_run(store, _suite_data(doc_offset=1000))
    with pytest.raises(EvalkitError, match="share no \\(task, doc_id\\)"):
        compare_runs(store, ra, rb)
    with pytest.raises(EvalkitError, match="not found"):
        compare_runs(store, ra, "no-such-run")


def test_partial_overlap_pairs_only_shared_docs(store):
    data_b = _suite_data()
    data_b["gsm8k"] = data_b["gsm8k"][:25]
    ra, rb = _make_run(store, _suite_data()), _make_run(store, data_b)
    row = compare_runs(store, ra, rb, iters=100).row("gsm8k", "exact_match,strict-match")
    assert row.n == 25 and row.n_a == 40 and row.n_b == 25


# ------------------------------------------------------------------ alignment tax
def test_alignment_tax_on_non_target_entries(store):
    ra = _make_run(store, _suite_data())
    rb = _make_run(store, _suite_data(flip_gsm=6, mmlu_shift=4))
    c = compare_runs(store, ra, rb, iters=1000)
    tax = alignment_tax(c, ["ifeval"])
    by = {e.entry: e for e in tax.per_entry}
    assert set(by) == {"gsm8k", "mmlu"}
    assert by["gsm8k"].metric == "exact_match,strict-match" and by["mmlu"].metric == "acc"
    assert by["mmlu"].delta == c.row("mmlu", "acc").delta and by["mmlu"].weight == 0.5
    assert tax.weighted_delta == pytest.approx((by["gsm8k"].delta + by["mmlu"].delta) / 2)
    assert tax.ci_lo <= tax.weighted_delta <= tax.ci_hi

    weighted = alignment_tax(c, ["ifeval"], weights={"mmlu": 3.0})
    assert weighted.weighted_delta == pytest.approx(0.75 * by["mmlu"].delta + 0.25 * by["gsm8k"].delta)
    other = alignment_tax(c, ["mmlu"], primary={"gsm8k": "exact_match,flexible-extract"})
    assert {e.entry: e.metric for e in other.per_entry} == {"gsm8k": "exact_match,flexible-extract", "ifeval": "inst_level_strict_acc"}
    json.dumps(tax.to_dict(), allow_nan=False)

    with pytest.raises(EvalkitError, match="not compared"):
        alignment_tax(c, ["humaneval"])
    with pytest.raises(EvalkitError, match="no paired metric 'f1'"):
        alignment_tax(c, ["ifeval"], primary={"mmlu": "f1"})


def test_alignment_tax_falls_back_to_first_metric_for_unknown_entries(store):
    data = {"mytask": [{"task": "mytask", "doc_id": d, "metrics": {"b_score": float(d % 2), "a_score": 1.0}} for d in range(10)],
            "gsm8k": _suite_data()["gsm8k"]}
    rid = _make_run(store, data)
    tax = alignment_tax(compare_runs(store, rid, rid, iters=50), ["gsm8k"])
    assert [(e.entry, e.metric, e.delta) for e in tax.per_entry] == [("mytask", "a_score", 0.0)]
    assert not tax.significant


# ------------------------------------------------------------------ storage and page
def test_comparison_is_stored_and_rendered_offline(store, tmp_path):
    ra = _make_run(store, _suite_data())
    rb = _make_run(store, _suite_data(flip_gsm=6, mmlu_shift=4, sharp=2.0))
    c = compare_runs(store, ra, rb, iters=200)
    tax = alignment_tax(c, ["ifeval"])
    cid = save_comparison(store, c.run_a, c.run_b, {"comparison": c.to_dict(), "tax": tax.to_dict()})
    got = get_comparison(store, cid[:-2])  # a unique id prefix is enough
    assert [r["id"] for r in list_comparisons(store)] == [cid]
    assert got["run_a"] == ra and got["result"]["comparison"] == json.loads(json.dumps(c.to_dict()))
    assert get_comparison(store, "latest")["id"] == cid

    kl = {"policy": "p", "ref": "r", "method": "adapter", "mean_kl": 0.05, "k1": 0.04, "k3": 0.06,
          "per_prompt": [{"prompt": "hi <b>", "n_tokens": 3, "kl": 0.1, "k1": 0.1, "k3": 0.1, "kl_sum": 0.3,
                          "token_kl": [0.0, 0.1, 0.2]}]}
    path = write_compare_report(got["result"]["comparison"], cid, reports_dir=str(tmp_path / "reports"),
                                tax=got["result"]["tax"], kl=kl)
    assert path == str(tmp_path / "reports" / f"compare-{cid}" / "index.html")
    html = open(path, encoding="utf-8").read()
    assert 'id="deltas"' in html and 'id="kl-hist"' in html and 'id="tax"' in html and 'id="calibration"' in html
    assert "exact_match,strict-match" in html and "hi &lt;b&gt;" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html


def test_kl_only_page(tmp_path):
    kl = {"policy": "p", "ref": "r", "mean_kl": 0.0, "k1": 0.0, "k3": 0.0,
          "per_prompt": [{"prompt": "x", "n_tokens": 1, "kl": 0.0, "k1": 0.0, "k3": 0.0, "kl_sum": 0.0, "token_kl": [0.0]}]}
    html = open(write_compare_report(None, "k1", reports_dir=str(tmp_path), kl=kl), encoding="utf-8").read()
    assert "evalkit KL" in html and 'id="kl-hist"' in html and "Suite hash" not in html and 'id="deltas"' not in html


def test_binary_significance_follows_exact_mcnemar_not_the_bootstrap():
    from evalkit.analysis.paired import metric_delta

    a = {("t", i): 0.0 for i in range(40)}
    b = dict(a)
    for i in range(4):  # 4 discordant docs, all won by b
        b[("t", i)] = 1.0
    row = metric_delta(("e", "t", "acc"), a, b, None, None, iters=1000, seed=0)
    assert row.ci_lo > 0  # the percentile bootstrap alone would call this significant
    assert row.p_mcnemar == pytest.approx(0.125) and not row.significant


def test_ifeval_inst_level_delta_is_the_difference_of_the_shown_pooled_values(store, tmp_path, capsys):
    """`evalkit show` prints lm-eval's pooled inst_level_strict_acc; `compare` pairs per prompt but
    its delta and CI are for that same pooled figure, and the page says how it paired."""
    base = _suite_data()
    tuned = _suite_data()
    for s in tuned["ifeval"]:
        if len(s["metrics"]["inst_level_strict_acc"]) == 3:  # fix every instruction of the long prompts
            s["metrics"]["inst_level_strict_acc"] = [True, True, True]
            s["metrics"]["prompt_level_strict_acc"] = True
    ra, rb = _make_run(store, base, model="base"), _make_run(store, tuned, model="tuned")
    c = compare_runs(store, ra, rb, iters=500)
    inst = c.row("ifeval", "inst_level_strict_acc")
    shown = {m["metric"]: m["value"] for m in store.metrics(rb) if m["task"] == "ifeval"}
    assert inst.value_b == pytest.approx(shown["inst_level_strict_acc"]) == pytest.approx(inst.stored_b)
    assert inst.delta == pytest.approx(inst.stored_b - inst.stored_a)
    per_prompt = np.mean([np.mean(t["metrics"]["inst_level_strict_acc"]) - np.mean(s["metrics"]["inst_level_strict_acc"])
                          for s, t in zip(base["ifeval"], tuned["ifeval"])])
    assert abs(inst.delta - per_prompt) > 0.02  # the two estimands really differ here
    assert inst.ci_lo <= inst.delta <= inst.ci_hi
    html = open(write_compare_report(c, "p1", reports_dir=str(tmp_path / "r")), encoding="utf-8").read()
    assert "paired per prompt (cluster), ratio estimator" in html
    assert c.to_dict()["rows"][[r.metric for r in c.rows].index("inst_level_strict_acc")]["pairing"] == PAIRED_PER_CLUSTER
    assert f"{PAIRED_PER_CLUSTER} ({inst.n_items} items pooled)</td>" in html  # the rows table says how it pairs
    from evalkit import cli

    assert cli.main(["--store", store.path, "compare", "--a", ra, "--b", rb, "--reports-dir", str(tmp_path / "r2")]) == 0
    printed = capsys.readouterr().out
    assert f"{PAIRED_PER_CLUSTER} ({inst.n_items} items pooled)" in printed and "per document" in printed

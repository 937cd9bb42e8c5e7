"""Failure clustering on a small hand-built store: texts and pass/fail mapping, c-TF-IDF,
error-rate/lift arithmetic, fallbacks, determinism with a fixed seed, storage round-trip.

The cheap hashing embedder stands in for MiniLM (the real UMAP and HDBSCAN still run);
one test runs the default MiniLM path end to end.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from evalkit.analysis.clusters import FAILURE_METRIC, cluster_run, load_clusters
from evalkit.analysis.clusters.cluster import canonical, partition, stability
from evalkit.analysis.clusters.embed import hashing_embed
from evalkit.analysis.clusters.label import ctfidf, label_for
from evalkit.analysis.clusters.pipeline import summarise
from evalkit.analysis.clusters.texts import Item, build_item, failure_metric, is_failure
from evalkit.errors import EvalkitError
from tests.clusterdata import as_stored, build_store, gsm8k_samples, ifeval_samples, mmlu_samples, tiny_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("clusters") / "s.sqlite")
    build_store(path)
    return path


@pytest.fixture(scope="module")
def clustered(store_path):
    """One saved clustering with the hashing embedder (shared by several tests)."""
    from evalkit.store import RunStore

    store = RunStore(store_path)
    return store, cluster_run(store, "latest", seed=0, embedder=hashing_embed)


# ------------------------------------------------------------------ pass/fail and texts
def test_failure_metric_mapping_and_values():
    assert FAILURE_METRIC["mmlu"] == "acc" and FAILURE_METRIC["ifeval"] == "prompt_level_strict_acc"
    assert failure_metric("gsm8k", {"exact_match,flexible-extract": 1, "exact_match,strict-match": 0}) == "exact_match,strict-match"
    assert failure_metric("other", {"brier": 0.3, "f1": 0.5, "em": 1}) == "f1"  # first non-calibration metric
    assert failure_metric("other", {"brier": 0.3}) is None
    assert is_failure(False) and not is_failure(True) and is_failure(0.0) and not is_failure(1.0)
    assert is_failure(0.8) and is_failure([True, False]) and not is_failure([True, True])


def test_task_aware_texts():
    ife = build_item(as_stored(ifeval_samples(1)[0], "ifeval"))
    assert ife.failed and "change_case:english_lowercase" in ife.text and ife.tags == {"change_case:english_lowercase": True}
    js = build_item(as_stored(ifeval_samples(3)[5], "ifeval"))  # json theme, passes; second instruction passed
    assert not js.failed and js.tags == {"detectable_format:json_format": False, "keywords:existence": False}
    gsm = build_item(as_stored(gsm8k_samples(2)[1], "gsm8k"))
    assert gsm.failed and "model 12 vs target 11" in gsm.text and gsm.expected.startswith("11") and gsm.groups == []
    mm = build_item(as_stored(mmlu_samples()[1], "mmlu"))
    assert mm.family == "mmlu" and "answered correctly: B." in mm.text and not mm.failed
    assert "astronomy" not in mm.text and mm.groups == ["astronomy"]  # the subject is the baseline, not the text
    assert build_item({"entry": "x", "task": "x", "doc_id": 0, "metrics": {}}) is None


# ---------------------------------------------------------------------------- labels
def test_ctfidf_on_hand_made_texts():
    docs = {0: ["apple banana apple", "apple pie crust", "apple orchard"],
            1: ["car engine", "car wheel engine", "engine oil car"],
            2: ["loop " * 50 + "lonely", "signal", "signal"]}
    terms = ctfidf(docs, top_n=3)
    assert terms[0][0][0] == "apple" and {t for t, _ in terms[1][:2]} == {"car", "engine"}
    assert terms[2][0][0] == "signal"  # a term in 2 of 3 docs beats one doc's 50 repeats (binary counts)
    # the formula: tf(apple, 0) = 3 docs / 7 doc-terms; A = (7 + 8 + 4) / 3; f(apple) = 3 -> tf * log(1 + A / f)
    assert terms[0][0][1] == pytest.approx(round(3 / 7 * math.log(1 + (19 / 3) / 3), 4))
    assert label_for(terms[1], {"ifeval": 3}) == "ifeval: car, engine, oil"
    assert ctfidf({0: ["the and of"], 1: [""]}) == {0: [], 1: []}  # only stop words


# ----------------------------------------------------------------- rates and fallbacks
def _item(entry: str, failed: bool, i: int) -> Item:
    return Item(entry, entry, i, entry, "acc", failed, f"{entry} text {i}", "q", "r", "e", {})


def test_error_rate_and_lift_arithmetic():
    # entry a: 3/4 fail (0.75), entry b: 1/4 fail (0.25)
    items = [_item("a", f, i) for i, f in enumerate([True, True, True, False])] + \
            [_item("b", f, i) for i, f in enumerate([True, False, False, False])]
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1])   # cluster 0: a0 a1 b0 b1 -> 3 of 4 fail
    dist = np.array([0.3, 0.1, 0.5, 0.5, 0.2, 0.4, 0.1, 0.1])
    xy = np.zeros((8, 2))
    clusters, members = summarise(items, labels, dist, xy, n_examples=2)
    c0, c1 = clusters
    assert (c0.size, c0.failures, c0.error_rate) == (4, 3, 0.75)
    assert c0.base_rate == pytest.approx((2 * 0.75 + 2 * 0.25) / 4) and c0.lift == pytest.approx(1.5)
    assert [(e["entry"], e["doc_id"]) for e in c0.examples] == [("a", 1), ("b", 0)]  # failing, most central first
    assert c1.error_rate == 0.25 and c1.lift == pytest.approx(0.5)
    assert len(members) == 8 and sum(m.failed for m in members) == 4


def test_zero_base_rate_has_no_lift():
    clusters, _ = summarise([_item("a", False, i) for i in range(3)], np.zeros(3, dtype=int), np.zeros(3), np.zeros((3, 2)))
    assert clusters[0].error_rate == 0.0 and clusters[0].lift is None and clusters[0].examples == []


def test_partition_fallback_and_canonical_ids():
    line = np.c_[np.arange(40.0), np.zeros(40)]  # no density structure: HDBSCAN finds nothing
    p = partition(line, seed=0)
    assert p.method == "kmeans" and p.params["hdbscan_clusters"] == 0 and len(set(p.labels)) == p.params["k"]
    blobs = np.r_[np.zeros((20, 2)), np.full((10, 2), 50.0)] + np.random.default_rng(0).normal(size=(30, 2))
    assert partition(blobs, seed=0).method == "hdbscan"
    assert canonical(np.array([5, 5, 2, 2, 2, -1])).tolist() == [1, 1, 0, 0, 0, -1]
    assert stability([np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])])[0] == pytest.approx(1.0)


def test_tiny_input_falls_back_to_one_cluster_per_entry(tmp_path):
    store, rid = tiny_store(str(tmp_path / "tiny.sqlite"))
    r = cluster_run(store, rid, embedder=hashing_embed)
    assert r.method == "single" and r.n_samples == 6 and r.stability is None
    assert sorted((c.label.split(":")[0], c.size) for c in r.clusters) == [("gsm8k", 2), ("ifeval", 4)]
    r2 = cluster_run(store, rid, embedder=hashing_embed, scope="run")
    assert r2.method == "by-entry" and len(r2.clusters) == 2


# -------------------------------------------------------- the pipeline and the store
def test_clusters_separate_the_ifeval_themes(clustered):
    _, r = clustered
    assert r.n_samples == 80 and r.n_failures == (20 + 2) + 15 + 2 * 7  # ifeval, gsm8k, mmlu
    ife = [c for c in r.clusters if "ifeval" in c.task_mix and not c.is_outliers]
    lower = max(ife, key=lambda c: c.tag_mix.get("change_case:english_lowercase", {"n": 0})["n"])
    assert lower.error_rate == 1.0 and lower.lift == pytest.approx(1 / (22 / 40), rel=1e-3)
    assert lower.tag_mix["change_case:english_lowercase"]["failed"] == lower.size
    assert "lowercase" in lower.label or "capital" in lower.label or "english_lowercase" in lower.label
    assert r.stability is not None and -1 <= r.stability <= 1 and len(r.stability_pairs) == 3
    assert {"embed", "umap_fit", "hdbscan", "labels", "total"} <= set(r.timings)


def test_same_seed_same_clusters(clustered):
    store, first = clustered
    again = cluster_run(store, "latest", seed=0, embedder=hashing_embed, save=False)
    key = lambda r: [(m.entry, m.task, m.doc_id, m.cluster_id, m.x, m.y) for m in r.members]  # noqa: E731
    assert key(again) == key(first) and [c.label for c in again.clusters] == [c.label for c in first.clusters]


def test_storage_round_trip(clustered):
    store, r = clustered
    back = load_clusters(store, "latest")
    assert back is not None and back.clustering_id == r.clustering_id
    assert back.to_dict(members=True) == r.to_dict(members=True)
    n_rows = store._db.execute("SELECT COUNT(*) FROM cluster_members WHERE run_id=?", (r.run_id,)).fetchone()[0]
    assert n_rows >= r.n_samples
    assert back.members_of(back.clusters[0].cluster_id, failed_only=True)[0].failed


def test_task_filter(clustered):
    store, _ = clustered
    r = cluster_run(store, "latest", tasks=["gsm8k"], embedder=hashing_embed, stability_seeds=1, save=False)
    assert r.n_samples == 20 and all(set(c.task_mix) == {"gsm8k"} for c in r.clusters) and r.stability is None
    with pytest.raises(EvalkitError, match="no samples for tasks nope"):
        cluster_run(store, "latest", tasks=["nope"], embedder=hashing_embed)


def test_minilm_default_path_is_deterministic(tmp_path):
    """The real embedder (offline MiniLM) on the IFEval entry, twice with the same seed."""
    store, rid = build_store(str(tmp_path / "m.sqlite"))
    a = cluster_run(store, rid, tasks=["ifeval"], seed=3, stability_seeds=1, save=False)
    b = cluster_run(store, rid, tasks=["ifeval"], seed=3, stability_seeds=1, save=False)
    assert [m.cluster_id for m in a.members] == [m.cluster_id for m in b.members]
    assert a.params["embedder"] == "minilm" and a.timings["embed"] > 0
    lower = [m.cluster_id for m in a.members if m.doc_id < 100]
    assert len(set(lower)) == 1 and lower[0] not in {m.cluster_id for m in a.members if m.doc_id >= 100}


# ---------------------------------------------------------------------- the report
def test_report_pages_escape_model_text_and_link(clustered, tmp_path):
    from evalkit.report.links import add_page_link
    from evalkit.report.run_report import write_run_report
    from evalkit.report.summary import write_summary

    store, _ = clustered
    r = cluster_run(store, "latest", embedder=hashing_embed, n_examples=100, save=False)  # every failure shown
    index = write_run_report(store, "latest", str(tmp_path), clusters=r)
    folder = os.path.dirname(index)
    listed = set(os.listdir(folder))  # other pages (samples.html ...) may sit beside these
    assert {"clusters.html", "index.html", "pages.json"} <= listed and "plotly.min.js" not in listed  # shared _assets/
    assert os.path.isfile(os.path.join(str(tmp_path), "_assets", "plotly.min.js"))
    page = open(os.path.join(folder, "clusters.html"), encoding="utf-8").read()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page and "cdn.plot.ly" not in page
    assert '<script src="../_assets/plotly.min.js">' in page and page.count('data-cluster="') == len(r.clusters)
    html = open(index, encoding="utf-8").read()
    assert 'href="clusters.html"' in html and 'id="reliability-mmlu"' in html
    add_page_link(folder, "Judge agreement", "judge.html", "later page")
    assert 'href="judge.html"' in open(index, encoding="utf-8").read()
    write_summary(store, r.run_id, str(tmp_path))  # a re-render (evalkit eval) keeps registered pages
    html = open(index, encoding="utf-8").read()
    assert 'href="judge.html"' in html and 'href="clusters.html"' in html

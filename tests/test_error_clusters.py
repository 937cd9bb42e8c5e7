"""Error-aware failure clusters: failure texts describe the error, c-TF-IDF terms name the
slice, each slice's lift has a bootstrap CI, and the verdict against the plain metadata split
(MMLU subject, IFEval instruction type) is a flag: set when the clusters are just the subjects,
unset when an error-type slice cuts across subjects."""

from __future__ import annotations

import numpy as np
import pytest

from evalkit.analysis.clusters.label import SCAFFOLD, class_docs, ctfidf, typical_member
from evalkit.analysis.clusters.pipeline import summarise
from evalkit.analysis.clusters.result import ClusterResult
from evalkit.analysis.clusters.stats import MIN_SLICE, compare_to_metadata, lift_table
from evalkit.analysis.clusters.texts import Item, build_item


def _mmlu(failed: bool) -> dict:
    return {"entry": "mmlu", "task": "mmlu_astronomy", "doc_id": 3, "prompt": "...", "target": "2",
            "loglik": [-1.0, -0.2, -3.0, -4.0] if failed else [-3.0, -2.0, -0.1, -4.0],
            "metrics": {"acc": 0.0 if failed else 1.0},
            "doc": {"question": "Which planet has the most moons?", "subject": "astronomy",
                    "choices": ["Mercury", "Venus", "Saturn", "Mars"], "answer": 2}}


def test_failure_text_names_the_wrong_and_the_right_answer():
    bad = build_item(_mmlu(True))
    assert bad.failed and "model answered: B. Venus" in bad.text and "correct: C. Saturn" in bad.text
    assert "Which planet" in bad.text and "astronomy" not in bad.text and bad.groups == ["astronomy"]
    good = build_item(_mmlu(False))
    assert not good.failed and "answered correctly: C. Saturn" in good.text and "Venus" not in good.text
    ife = build_item({"entry": "ifeval", "task": "ifeval", "doc_id": 0, "responses": ["Hello, World, again"],
                      "metrics": {"prompt_level_strict_acc": False, "inst_level_strict_acc": [False, True]},
                      "doc": {"prompt": "Say hi", "instruction_id_list": ["punctuation:no_comma", "length:words"]}})
    assert ife.text.startswith("ifeval failed instructions: punctuation:no_comma; kept: length:words")
    assert "output: Hello, World" in ife.text and ife.groups == ["punctuation", "length"]


def test_ctfidf_terms_are_discriminative_over_failure_texts():
    texts = ([f"mmlu model answered: A. none of the above; correct: B. {i} kg" for i in range(6)]
             + [f"mmlu model answered: C. negative {i}; correct: D. positive {i}" for i in range(6)]
             + ["mmlu answered correctly: A. negative", "mmlu answered correctly: B. positive"] * 3)
    failed = [True] * 12 + [False] * 6
    labels = [0] * 6 + [1] * 6 + [0, 1] * 3
    docs = class_docs(texts, failed, labels)
    assert len(docs[0]) == 6 and all("answered correctly" not in d for d in docs[0])  # failure texts only
    terms = {c: [t for t, _ in v] for c, v in ctfidf(docs, top_n=3).items()}
    assert terms[0][0] == "kg"  # "none of the above" is scaffold / stop words
    assert {"negative", "positive"} == set(terms[1][:2])
    assert not (set(terms[0]) | set(terms[1])) & SCAFFOLD and not set(terms[0]) & set(terms[1])
    assert class_docs(["a x", "b y"], [False, False], [0, 0]) == {0: ["a x", "b y"]}  # no failures: all texts
    assert typical_member([0, 1, 2], [0.1, 0.5, 0.05], [False, True, False]) == 1  # a failing member first


def _items(n_subjects: int = 4, per: int = 40, slice_per: int = 10, seed: int = 0) -> list[Item]:
    """Subjects with equal error rates; in each, ``slice_per`` samples of one error type all fail
    and the rest fail at 10%: the error type cuts across the subjects."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_subjects):
        for j in range(per):
            kind = j < slice_per
            failed = True if kind else bool(rng.random() < 0.1)
            out.append(Item("mmlu", f"mmlu_s{s}", s * per + j, "mmlu", "acc", failed, "t", "q", "r", "e", {},
                            groups=[f"s{s}"]))
    return out


def _clusters(items, labels):
    labels = np.asarray(labels)
    clusters, _ = summarise(items, labels, np.zeros(len(items)), np.zeros((len(items), 2)))
    return clusters, compare_to_metadata(items, labels, clusters, iters=400, seed=0)


def test_lift_ci_is_computed_and_brackets_the_lift():
    items = _items()
    kind = np.array([it.doc_id % 40 < 10 for it in items])
    table = lift_table(items, np.c_[kind, ~kind].astype(float), iters=400, seed=0)
    hi, lo = table
    assert hi["n"] == 40 and hi["error_rate"] == 1.0 and hi["lift_ci"][0] <= hi["lift"] <= hi["lift_ci"][1]
    assert hi["lift_ci"][0] > 1.5 and lo["lift_ci"][1] < 1.0
    assert hi["error_ci"][0] < 1.0 == hi["error_ci"][1]  # Wilson
    assert lift_table(items, np.c_[kind].astype(float), iters=400, seed=0) == [hi]  # same seed, same CI


def test_flag_set_when_clusters_are_the_subjects():
    # subjects with different error rates; the clusters are exactly the subjects
    rng = np.random.default_rng(2)
    items = [Item("mmlu", f"mmlu_s{s}", s * 30 + j, "mmlu", "acc", bool(rng.random() < p), "t", "q", "r", "e", {},
                  groups=[f"s{s}"]) for s, p in enumerate([0.2, 0.5, 0.8]) for j in range(30)]
    clusters, extra = _clusters(items, [it.doc_id // 30 for it in items])
    assert extra["no_slice_beats_metadata"] is True and extra["entries"]["mmlu"]["beating"] == []
    assert not any(c.beats_metadata for c in clusters) and all(c.lift_ci for c in clusters)
    best = extra["entries"]["mmlu"]["best"]
    assert best["n"] >= MIN_SLICE and best["lift"] == max(c.lift for c in clusters)
    assert "no slice beats the best subject group" in extra["entries"]["mmlu"]["verdict"]


def test_flag_unset_when_an_error_slice_cuts_across_subjects():
    items = _items()
    labels = [0 if it.doc_id % 40 < 10 else 1 for it in items]  # the error type, across all 4 subjects
    clusters, extra = _clusters(items, labels)
    assert extra["no_slice_beats_metadata"] is False and extra["entries"]["mmlu"]["beating"] == [0]
    slice0 = next(c for c in clusters if c.cluster_id == 0)
    assert slice0.beats_metadata and slice0.lift_ci[0] > extra["entries"]["mmlu"]["bar"]
    assert len(slice0.task_mix) == 4  # it cuts across the subjects
    r = ClusterResult("r", 0, None, "x", {}, None, [], len(items), 0, {}, clusters, [], extra=extra)
    assert r.no_slice_beats_metadata is False


def test_entry_without_metadata_is_compared_with_its_mean():
    items = [Item("gsm8k", "gsm8k", i, "gsm8k", "em", i < 12 or i % 4 == 0, "t", "q", "r", "e", {}) for i in range(40)]
    clusters, extra = _clusters(items, [0 if i < 12 else 1 for i in range(40)])
    d = extra["entries"]["gsm8k"]
    assert d["split"] == "none" and d["bar"] == 1.0 and d["beating"] == [0] and "no metadata split" in d["verdict"]


def test_old_stored_clusterings_still_load(tmp_path):
    """A clustering stored before the stats columns existed reads back with the new fields unset."""
    import sqlite3

    from evalkit.analysis.clusters import load_clusters
    from evalkit.store import RunStore
    from evalkit.store.clusters import TABLES, load_clustering
    from tests.clusterdata import tiny_store

    store, rid = tiny_store(str(tmp_path / "old.sqlite"))
    db = sqlite3.connect(store.path)
    for sql in TABLES:
        db.execute(sql)
    db.execute("INSERT INTO clusterings VALUES ('c1', ?, 1.0, 0, 'single', 'null', '{}', NULL, '[]', 1, 1, '{}')", (rid,))
    db.execute("INSERT INTO clusters VALUES ('c1', 0, 'old', '[]', 1, 1, 1.0, 1.0, 1.0, '{}', '{}', '[]')")
    db.execute("INSERT INTO cluster_members VALUES ('c1', ?, 'gsm8k', 'gsm8k', 0, 0, 1, 0.0, 0.0, 0.0)", (rid,))
    db.commit()
    db.close()
    back = load_clusters(RunStore(store.path), rid)
    assert back is not None and back.clusters[0].lift_ci is None and back.no_slice_beats_metadata is None
    assert load_clustering(RunStore(store.path), run_id=rid)[0]["extra"] == {}

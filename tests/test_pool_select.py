"""Training pools (schemas, errors) and the ``pool`` counterexample strategy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evalkit.analysis.clusters.result import Cluster, ClusterResult, Member
from evalkit.errors import EvalkitError
from trainloop.data.decontam import DecontamConfig
from trainloop.data.pool import PoolExample, read_pool
from trainloop.strategies.select_pool import select_from_pool
from trainloop.strategies.targets import Target, allot, rank_targets


def _write(tmp_path, rows, name="pool.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(p)


def test_read_pool_schemas(tmp_path) -> None:
    path = _write(tmp_path, [
        {"question": "2+2?", "answer": "4 #### 4"},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}]},
        {"prompt": "p", "completion": "c"},
        {"instruction": "Translate", "input": "chat", "output": "cat"},
        "",
    ])
    rows = read_pool(path)
    assert [(r.row, r.prompt, r.response) for r in rows] == [
        (1, "2+2?", "4 #### 4"), (2, "hi", "hello"), (3, "p", "c"), (4, "Translate\n\nchat", "cat")]
    assert rows[1].messages()[0] == {"role": "system", "content": "be brief"}
    assert rows[0].messages()[-1] == {"role": "assistant", "content": "4 #### 4"}


@pytest.mark.parametrize("row, needle", [
    ('{"question": "x"', "not valid JSON"),
    ('{"text": "x"}', "expected 'messages'"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "must end with an assistant turn"),
    ('{"question": " ", "answer": "1"}', "empty prompt"),
    ('[1, 2]', "JSON object"),
])
def test_read_pool_errors_name_file_and_line(tmp_path, row, needle) -> None:
    path = _write(tmp_path, [{"question": "ok", "answer": "1"}, row])
    with pytest.raises(EvalkitError, match=needle) as err:
        read_pool(path)
    assert f"{path}:2:" in str(err.value)


def test_read_pool_missing_file(tmp_path) -> None:
    with pytest.raises(EvalkitError, match="training pool"):
        read_pool(str(tmp_path / "nope.jsonl"))


def test_allot_is_proportional_and_exact() -> None:
    assert allot([6, 3, 1], 10) == [6, 3, 1]
    assert allot([1, 1, 1], 4) == [2, 1, 1]
    assert sum(allot([7, 5, 3, 2], 13)) == 13
    assert allot([0, 0], 5) == [0, 0] and allot([3], 0) == [0]


def _cluster(cid, failures, lift, size=10):
    return Cluster(cid, f"c{cid}", [], size, failures, failures / size, 0.3, lift, {}, {}, [])


def test_rank_targets_by_failure_mass_on_target_tasks_outliers_last() -> None:
    members = [
        Member("core", "mmlu_astronomy", 0, 0, True, 0, 0, 0.1),
        Member("core", "gsm8k", 1, 0, True, 0, 0, 0.2),
        Member("core", "gsm8k", 2, 1, True, 0, 0, 0.3),
        Member("core", "gsm8k", 3, 1, True, 0, 0, 0.1),
        Member("core", "gsm8k", 4, 1, False, 0, 0, 0.1),
        Member("core", "gsm8k", 5, -1, True, 0, 0, 0.1),
    ]
    res = ClusterResult("r", 0, None, "hdbscan", {}, None, [], 6, 5, {},
                        [_cluster(0, 2, 2.0), _cluster(1, 2, 1.5), _cluster(-1, 1, None)], members)
    ranked = rank_targets(res, ["gsm8k"])
    assert [(t.cluster_id, t.failures) for t in ranked] == [(1, 2), (0, 1)]
    assert ranked[0].keys == (("core", "gsm8k", 3), ("core", "gsm8k", 2))  # most central first
    assert [t.cluster_id for t in rank_targets(res, ["mmlu"])] == [0]  # prefix covers subjects
    only_outliers = ClusterResult("r", 0, None, "hdbscan", {}, None, [], 1, 1, {}, [_cluster(-1, 1, None)], members[-1:])
    assert [t.cluster_id for t in rank_targets(only_outliers, ["gsm8k"])] == [-1]


def _embedder(table):
    def embed(texts):
        return np.array([table[t] for t in texts], dtype=np.float32)
    return embed


def test_select_from_pool_nearest_allotted_decontaminated() -> None:
    # 3-d toy space: topic A on axis 0, topic B on axis 1, unrelated on axis 2
    table = {
        "failA": [1, 0, 0], "failB": [0, 1, 0], "evalX": [0.0, 0.0, 1.0],
        "a1": [0.99, 0.14, 0], "a2": [0.95, 0.31, 0], "a3": [0.9, 0.0, 0.44], "b1": [0.1, 0.99, 0],
        "leak": [0.3, 0.0, 0.95],  # cosine 0.95 to an eval item -> dropped before selection
        "copy": [0, 0, -1],  # the copy is caught by its 13-grams, not its embedding
    }
    copy_text = "this pool prompt repeats an eval item word for word so it must never be used for training"
    table[copy_text] = table["copy"]
    pool = [PoolExample(i + 1, p, "r") for i, p in enumerate(["b1", "a3", "leak", "a1", copy_text, "a2"])]
    targets = [Target(7, "A", 3, 2.0, ()), Target(9, "B", 1, 1.0, ())]
    sel = select_from_pool(targets, {7: ["failA"], 9: ["failB"]}, pool, budget=4, embed=_embedder(table),
                           eval_texts=["evalX", copy_text], decontam=DecontamConfig(cosine=0.9))
    assert sel.allotment == {7: 3, 9: 1}
    assert sel.dropped == {"ngram": 1, "embedding": 1}
    picked = [(s.cluster_id, s.example.prompt) for s in sel.selected]
    assert picked == [(7, "a1"), (7, "a2"), (7, "a3"), (9, "b1")]
    assert sel.short == {}
    prov = sel.selected[0].provenance()
    assert prov == {"strategy": "pool", "cluster_id": 7, "source_row": 4, "similarity": pytest.approx(0.99, abs=1e-3)}


def test_select_from_pool_reports_shortfall_and_min_similarity() -> None:
    table = {"failA": [1, 0], "x": [0, 1], "y": [0.6, 0.8]}
    pool = [PoolExample(1, "x", "r"), PoolExample(2, "y", "r")]
    sel = select_from_pool([Target(1, "A", 5, None, ())], {1: ["failA"]}, pool, budget=3, embed=_embedder(table),
                           eval_texts=[], min_similarity=0.5)
    assert [s.example.prompt for s in sel.selected] == ["y"]
    assert sel.short == {1: 2}

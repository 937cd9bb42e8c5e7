"""The selection / confirmation halves in the loop (the split itself: :mod:`evalkit.suite.split`).

Failures are clustered and data is selected from the selection half only. The gate's target
test runs on the confirmation half, and "did the targeted clusters shrink" is measured there
too: each confirmation item joins the cluster whose centroid (mean MiniLM embedding of the
cluster's selection-half members) is nearest, so the count compares the same kind of items
that chose the data, without being the items that chose it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Key3 = tuple[str, str, int]


def frozen_split(cfg: Any) -> dict[str, dict[str, list[list[Any]]]]:
    """entry -> {"select": [[task, doc_id]...], "confirm": [...]} for the suite's split entries."""
    from evalkit import api

    fs = api.freeze_suite(cfg.suite, cfg.data_dir, cfg.limit)
    out: dict[str, dict[str, list[list[Any]]]] = {}
    for fe in fs.entries:
        if fe.split:
            out[fe.entry.name] = {part: [[t, i] for t, ids in sorted(fe.split.items()) for i in ids[part]]
                                  for part in ("select", "confirm")}
    return out


def part_keys(split: Mapping[str, Any], part: str) -> dict[str, set[tuple[str, int]]]:
    """entry -> {(task, doc_id)} of one half."""
    return {e: {(t, int(i)) for t, i in halves[part]} for e, halves in split.items()}


def confirm_shrink(targets: Sequence[Mapping[str, Any]], members: Sequence[Sequence[Any]], items: Mapping[Key3, Any],
                   confirm: Mapping[str, set[tuple[str, int]]], after: Mapping[Key3, bool],
                   embed: Callable[[list[str]], np.ndarray] | None) -> list[dict[str, Any]]:
    """Per targeted cluster: confirmation items that failed before (base) and still fail after."""
    conf_fail = [k for k, it in items.items() if it.failed and (k[1], k[2]) in confirm.get(k[0], set())]
    by_cluster: dict[int, list[Key3]] = {}
    for e, t, d, c in members:
        if (e, t, int(d)) in items:
            by_cluster.setdefault(int(c), []).append((e, t, int(d)))
    cids = sorted(c for c in by_cluster if c >= 0)
    assign: dict[Key3, int] = {}
    if embed is not None and cids and conf_fail:
        cent_texts = [items[k].text for c in cids for k in by_cluster[c]]
        X = np.asarray(embed(cent_texts + [items[k].text for k in conf_fail]), dtype=np.float32)
        M, Q = X[: len(cent_texts)], X[len(cent_texts):]
        cents, pos = [], 0
        for c in cids:
            n = len(by_cluster[c])
            v = M[pos: pos + n].mean(axis=0)
            cents.append(v / (np.linalg.norm(v) or 1.0))
            pos += n
        C = np.stack(cents)
        nearest = np.argmax(Q @ C.T, axis=1)
        assign = {k: cids[int(j)] for k, j in zip(conf_fail, nearest)}
    out = []
    for t in targets:
        keys = [k for k, c in assign.items() if c == t["cluster_id"]]
        out.append({"cluster_id": t["cluster_id"], "label": t["label"], "split": "confirm", "before": len(keys),
                    "after": sum(1 for k in keys if after.get(k, True))})
    return out

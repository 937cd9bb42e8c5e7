"""The sample browser (``reports/<run_id>/samples.html``): every sample of a run — input,
output, target, score and failure cluster — in one offline page with filters (entry, pass/fail,
cluster), a debounced text search over input/output/target and 100 rows per page.

Why one self-contained page: it must open from ``file://`` with no server and no network, so
the rows travel inside the page as JSON in a ``<script type="application/json">`` block and a
small vanilla-JS table renders one page of them at a time (10,000 samples stay responsive; see
``bench/bench_sample_browser.py``). Model text is untrusted: in the JSON every ``<``, ``>`` and
``&`` is written as a ``\\u00XX`` escape (so no ``</script>`` can end the block), and the page
renders text only with ``textContent``.

Why shared prompt prefixes are stored once: a few-shot prompt repeats the same shots for every
sample of a task (several KB each), which would make a 10,000-sample page tens of MB. Each
task's longest common prompt prefix (cut back to a line start, kept when ≥ 200 characters) is
stored once; rows carry only their own tail, and the expanded view shows prefix + tail.

Score: the entry's pass/fail metric as failure clustering chooses it
(:func:`evalkit.analysis.clusters.texts.failure_metric`: the family's mapped metric, else the first
score-like one), shown as pass/fail when it is 0/1, else as a number (a list as its mean).
Clusters: the run's latest stored clustering (or ``clustering_id``); without one the column
shows "-".
"""

from __future__ import annotations

import json
import os
from typing import Any

from evalkit.analysis.clusters.texts import build_item, failure_metric, family_of, is_failure
from evalkit.analysis.paired.values import per_sample_value
from evalkit.report.jinja_env import environment
from evalkit.report.links import add_page_link, read_page_links
from evalkit.store import RunStore
from evalkit.store.clusters import load_clustering

PAGE = "samples.html"
PAGE_SIZE = 100
MIN_PREFIX = 200          # shared prompt prefixes shorter than this are left in the rows
MAX_FIELD = 100_000       # characters kept per text field (a runaway generation stays bounded)


def embed_json(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>``, ``&`` become escapes
    (valid JSON, since they can only occur inside strings), so the text cannot close the block."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def shared_prefix(prompts: list[str]) -> str:
    """The prompts' longest common prefix cut back to a line start, or "" when short or single."""
    if len(prompts) < 2:
        return ""
    prefix = os.path.commonprefix(prompts)
    cut = prefix.rfind("\n")
    prefix = prefix[: cut + 1] if cut >= 0 else ""
    return prefix if len(prefix) >= MIN_PREFIX else ""


def _clip(text: str) -> str:
    return text if len(text) <= MAX_FIELD else text[:MAX_FIELD] + f"\n… [{len(text) - MAX_FIELD} more characters]"


def _output(sample: dict[str, Any]) -> str:
    responses = sample.get("responses") or []
    texts = [r for r in responses if isinstance(r, str)]
    if texts:
        if len(texts) == 1:
            return texts[0]
        return "\n\n".join(f"[{i + 1}/{len(texts)}] {t}" for i, t in enumerate(texts))
    item = build_item(sample)  # multiple choice: "chose B. ..." from the log-likelihoods
    if item is not None and item.response:
        return item.response
    return json.dumps(sample.get("filtered"), ensure_ascii=False) if sample.get("filtered") else ""


def _target(sample: dict[str, Any], family: str) -> str:
    if family == "mmlu":
        item = build_item(sample)
        if item is not None:
            return item.expected
    target = sample.get("target")
    return "" if target is None else (target if isinstance(target, str) else json.dumps(target, ensure_ascii=False))


def score_of(entry: str, task: str, metrics: dict[str, Any]) -> tuple[str | None, str, bool | None]:
    """(metric, shown text, passed) of a sample; (None, "-", None) without a score-like metric."""
    metric = failure_metric(family_of(entry, task), metrics)
    if metric is None:
        return None, "-", None
    raw = metrics[metric]
    value = per_sample_value(raw)
    if value is None:
        return metric, "-", None
    passed = not is_failure(raw)
    if not isinstance(raw, (list, tuple)) and value in (0.0, 1.0):
        return metric, "pass" if passed else "fail", passed
    return metric, f"{value:.4g}", passed


def page_data(store: RunStore, run_id: str, clustering_id: str | None = None) -> dict[str, Any]:
    """Everything the page shows, JSON-able: entries, clusters, shared prefixes and one row per sample."""
    samples = store.samples(run_id)
    loaded = load_clustering(store, run_id=run_id, clustering_id=clustering_id)
    clusters: list[dict[str, Any]] = []
    member_of: dict[tuple[str, str, int], int] = {}
    if loaded is not None:
        _, stored, members = loaded
        index = {}
        for c in sorted(stored, key=lambda c: (c["cluster_id"] < 0, abs(c["cluster_id"]))):
            index[c["cluster_id"]] = len(clusters)
            clusters.append({"id": c["cluster_id"], "label": c["label"], "size": c["size"]})
        for m in members:
            if m["cluster_id"] in index:
                member_of[(m["entry"], m["task"], int(m["doc_id"]))] = index[m["cluster_id"]]
    entries: list[str] = []
    entry_index: dict[str, int] = {}
    metric_of: dict[str, set[str]] = {}
    by_task: dict[tuple[str, str], list[str]] = {}
    for s in samples:
        by_task.setdefault((s["entry"], s["task"]), []).append(str(s.get("prompt") or ""))
    prefixes: list[str] = []
    prefix_of: dict[tuple[str, str], int] = {}
    for key, prompts in by_task.items():
        p = shared_prefix(prompts)
        if p:
            prefix_of[key] = len(prefixes)
            prefixes.append(p)
    rows = []
    for s in samples:
        entry, task = s["entry"], s["task"]
        if entry not in entry_index:
            entry_index[entry] = len(entries)
            entries.append(entry)
        metric, shown, passed = score_of(entry, task, s.get("metrics") or {})
        if metric:
            metric_of.setdefault(entry, set()).add(metric)
        prompt = str(s.get("prompt") or "")
        p = prefix_of.get((entry, task), -1)
        if p >= 0:
            prompt = prompt[len(prefixes[p]):]
        filtered = s.get("filtered")
        rows.append({
            "e": entry_index[entry], "t": task, "d": int(s["doc_id"]), "p": p, "i": _clip(prompt),
            "o": _clip(_output(s)), "g": _clip(_target(s, family_of(entry, task))),
            "f": json.dumps(filtered, ensure_ascii=False) if filtered else "",
            "m": s.get("metrics") or {}, "s": shown, "ok": None if passed is None else int(passed),
            "c": member_of.get((entry, task, int(s["doc_id"])), -1),
        })
    return {"entries": entries, "metrics": {e: sorted(metric_of.get(e, ())) for e in entries},
            "clusters": clusters, "has_clusters": loaded is not None, "prefixes": [_clip(p) for p in prefixes],
            "rows": rows, "page_size": PAGE_SIZE}


def write_samples_page(store: RunStore, run_id: str, out_dir: str, *, clustering_id: str | None = None,
                       link: bool = True) -> str:
    """Write ``<out_dir>/samples.html`` (``out_dir`` is the run's report folder) and, with ``link``,
    register it in the run's index; returns the page's absolute path."""
    run = store.get_run(run_id)
    data = page_data(store, run.run_id, clustering_id)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    n, n_fail = len(data["rows"]), sum(1 for r in data["rows"] if r["ok"] == 0)
    if link:
        add_page_link(out_dir, "Sample browser", PAGE, f"{n} samples ({n_fail} failing)")
    html = environment().get_template("samples.html").render(
        run=run, data_json=embed_json(data), n=n, n_fail=n_fail, entries=data["entries"],
        metrics=data["metrics"], has_clusters=data["has_clusters"],
        links=[lk for lk in read_page_links(out_dir) if lk["href"] != PAGE],
    )
    path = os.path.join(out_dir, PAGE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(html)
    os.replace(tmp, path)
    return path

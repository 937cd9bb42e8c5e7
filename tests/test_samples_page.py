"""The sample browser (``reports/<run_id>/samples.html``): every sample in its JSON block, model
text that cannot break out of it, shared prompt prefixes stored once, scores and clusters joined,
the index link, and in headless Chromium: no JS errors, and the entry / score / search filters
(driven by the URL hash) give the expected count line. Screenshot: reports/browser-test/samples.png
(docs/samples.png is a copy of it, refreshed by hand).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evalkit.report.run_report import write_run_report
from evalkit.report.samples_page import MIN_PREFIX, page_data, shared_prefix, write_samples_page
from evalkit.report.summary import write_summary
from evalkit.store import RunStore
from evalkit.store.clusters import save_clustering
from tests.clusterdata import XSS, gsm8k_samples, ifeval_samples
from tests.test_report_browser import CHROMIUM, SCREENSHOT_DIR, chromium, uncaught

SHOTS = "Question: Ann has 3 pens and buys 2 more. How many pens?\nAnswer: 5\n\n" * 6  # > MIN_PREFIX


def small_store(path: str, clusters: bool) -> tuple[RunStore, str]:
    """ifeval (6 samples, one with a script-tag response) and gsm8k (5, few-shot prompts)."""
    store = RunStore(path)
    rid = store.create_run(identity="samples-test", model_spec="fake-model", model_hash="sha256:0", suite_name="core",
                           suite_hash="s" * 16, suite={}, settings={}, versions={})
    ife = ifeval_samples(3)
    gsm = gsm8k_samples(5)
    for s in gsm:
        s["prompt"] = SHOTS + s["prompt"].split("\n\n", 1)[1]
    for entry, samples in (("ifeval", ife), ("gsm8k", gsm)):
        store.start_entry(rid, entry, {})
        store.complete_entry(rid, entry, samples, [])
    if clusters:
        members = [{"entry": e, "task": s["task"], "doc_id": s["doc_id"], "cluster_id": 0 if e == "ifeval" else 1,
                    "failed": True, "x": 0.0, "y": 0.0, "distance": 0.0}
                   for e, ss in (("ifeval", ife), ("gsm8k", gsm[:4])) for s in ss]  # gsm8k doc 4: not clustered
        cl = [{"cluster_id": cid, "label": label, "terms": [], "size": n, "failures": n, "error_rate": 1.0, "base_rate": 0.5,
               "lift": 2.0, "task_mix": {}, "tag_mix": {}, "examples": []}
              for cid, label, n in ((0, "capital letters", 6), (1, "off by one", 4))]
        save_clustering(store, {"run_id": rid, "seed": 0, "method": "test", "n_samples": 10, "n_failures": 10}, cl, members)
    store.finish_run(rid, {})
    return store, rid


def embedded(html: str) -> tuple[str, dict]:
    raw = re.search(r'<script type="application/json" id="sample-data">(.*?)</script>', html, re.S).group(1)
    return raw, json.loads(raw)


@pytest.fixture(params=[True, False], ids=["clusters", "no-clusters"])
def page(request, tmp_path):
    store, rid = small_store(str(tmp_path / "s.sqlite"), clusters=request.param)
    index = Path(write_summary(store, rid, str(tmp_path / "reports")))
    path = Path(write_samples_page(store, rid, str(index.parent)))
    return store, rid, path, request.param


def test_every_sample_in_the_json_with_scores_and_clusters(page):
    store, rid, path, clustered = page
    html = path.read_text(encoding="utf-8")
    _, data = embedded(html)
    samples = store.samples(rid)
    assert len(data["rows"]) == len(samples) == 11 and data["entries"] == ["gsm8k", "ifeval"]
    for row, s in zip(data["rows"], samples):
        assert (data["entries"][row["e"]], row["t"], row["d"]) == (s["entry"], s["task"], s["doc_id"])
        prefix = data["prefixes"][row["p"]] if row["p"] >= 0 else ""
        assert prefix + row["i"] == s["prompt"]  # full input recoverable
        assert row["o"] == s["responses"][0] and row["g"] == s["target"] and row["m"] == s["metrics"]
    gsm = [r for r in data["rows"] if r["e"] == 0]
    assert [r["s"] for r in gsm] == ["pass", "fail", "fail", "fail", "pass"]  # exact_match,strict-match 1/0
    assert [r["ok"] for r in gsm] == [1, 0, 0, 0, 1]
    assert data["metrics"] == {"gsm8k": ["exact_match,strict-match"], "ifeval": ["prompt_level_strict_acc"]}
    if clustered:
        labels = [data["clusters"][r["c"]]["label"] if r["c"] >= 0 else "-" for r in data["rows"]]
        assert labels == ["off by one"] * 4 + ["-"] + ["capital letters"] * 6
        assert data["has_clusters"] and "id=\"no-clusters\"" not in html
    else:
        assert not data["has_clusters"] and all(r["c"] == -1 for r in data["rows"]) and "id=\"no-clusters\"" in html


def test_shared_prompt_prefix_is_stored_once(page):
    _, _, path, _ = page
    html = path.read_text(encoding="utf-8")
    _, data = embedded(html)
    assert data["prefixes"] == [SHOTS]  # gsm8k's shots; ifeval prompts share too little
    assert html.count("Ann has 3 pens") == 6  # once per shot, not once per sample
    assert shared_prefix(["x" * 300 + "\nA", "x" * 300 + "\nB"]) == "x" * 300 + "\n"
    assert shared_prefix(["short\nA", "short\nB"]) == "" and shared_prefix(["y" * 500]) == ""
    assert len(SHOTS) >= MIN_PREFIX


def test_model_output_cannot_close_the_script_block(page):
    _, _, path, _ = page
    html = path.read_text(encoding="utf-8")
    raw, data = embedded(html)
    assert any(XSS in r["o"] for r in data["rows"])  # the script-tag response, intact after JSON.parse
    assert "<" not in raw and ">" not in raw and "&" not in raw  # all escaped as \u003c ...
    assert html.count("</script>") == 3  # error recorder, data block, page script: nothing extra
    assert "innerHTML" not in html  # text goes in with textContent only


def test_linked_from_the_index(page):
    _, _, path, _ = page
    index = (path.parent / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<a href="samples.html">Sample browser</a> — 11 samples \(\d+ failing\)', index)
    assert json.loads((path.parent / "pages.json").read_text())[-1]["href"] == "samples.html"


def test_run_report_writes_the_sample_browser(tmp_path):
    store, rid = small_store(str(tmp_path / "s.sqlite"), clusters=True)
    index = Path(write_run_report(store, rid, str(tmp_path / "reports")))  # stored clustering reused
    assert (index.parent / "samples.html").is_file()
    assert 'href="samples.html"' in index.read_text(encoding="utf-8")
    _, data = embedded((index.parent / "samples.html").read_text(encoding="utf-8"))
    assert [c["label"] for c in data["clusters"]] == ["capital letters", "off by one"]


def test_non_binary_score_shown_as_number(tmp_path):
    store, rid = small_store(str(tmp_path / "s.sqlite"), clusters=False)
    samples = ifeval_samples(1)
    samples[0]["metrics"] = {"rouge": 0.25}
    samples[1]["metrics"] = {}
    store.complete_entry(rid, "ifeval", samples, [])
    rows = [r for r in page_data(store, rid)["rows"] if r["t"] == "ifeval"]
    assert [(r["s"], r["ok"]) for r in rows] == [("0.25", 0), ("-", None)]


# ------------------------------------------------------------------------------- in Chromium
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")


def _count(dom: str) -> str:
    return re.search(r'<span id="count"[^>]*>([^<]*)</span>', dom).group(1)


def _no_errors(done) -> str:
    dom = done.stdout
    assert done.returncode == 0 and "</html>" in dom, done.stderr[-2000:]
    errors = re.search(r'<div id="js-errors"([^>]*)>(.*?)</div>', dom, re.S)
    assert errors and "hidden" in errors.group(1) and errors.group(2).strip() == "", errors.group(0)
    assert not uncaught(done.stderr), uncaught(done.stderr)
    return dom


@needs_chromium
@pytest.mark.browser
def test_filters_and_search_in_chromium(tmp_path):
    store, rid = small_store(str(tmp_path / "s.sqlite"), clusters=True)
    path = Path(write_samples_page(store, rid, str(tmp_path / "reports" / rid)))
    dom = _no_errors(chromium(tmp_path / "p0", "--dump-dom", path.as_uri()))
    assert _count(dom) == "showing 1–11 of 11" and len(re.findall(r'<tr class="row', dom)) == 11
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and '<img src="x"' not in dom  # shown, inert
    # entry + score from the hash; then text search (matches output "Sam has 11 apples") + cluster
    dom = _no_errors(chromium(tmp_path / "p1", "--dump-dom", path.as_uri() + "#entry=gsm8k&score=fail"))
    assert _count(dom) == "showing 1–3 of 3 (filtered from 11)"
    dom = _no_errors(chromium(tmp_path / "p2", "--dump-dom", path.as_uri() + "#q=SAM%20HAS%2011&cluster=1&open=1"))
    assert _count(dom) == "showing 1–1 of 1 (filtered from 11)"
    assert 'class="detail"' in dom and "shared prompt prefix of task gsm8k" in dom  # expanded row: full input


@needs_chromium
@pytest.mark.browser
def test_screenshot(tmp_path, capsys):
    store, rid = small_store(str(tmp_path / "s.sqlite"), clusters=True)
    path = Path(write_samples_page(store, rid, str(tmp_path / "reports" / rid)))
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "samples.png"
    shot.unlink(missing_ok=True)
    done = chromium(tmp_path / "shot", "--hide-scrollbars", "--window-size=1280,1000", f"--screenshot={shot}",
                    path.as_uri() + "#entry=gsm8k&open=2")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert not uncaught(done.stderr), uncaught(done.stderr)
    with capsys.disabled():
        print(f"\n[samples test] screenshot: {shot}")

"""The run history page (``evalkit history --suite S``): every complete run of the suite in time
order, headline metrics with 95% CIs drawn with plotly (titled axes with units, legend below),
runs of another suite hash marked, loop rounds joined by a line per loop (read from the loop's
tables with SQL: evalkit never imports trainloop), links to each run's report, and a clean load in
headless Chromium with a screenshot. No model is loaded: runs are written directly to a RunStore."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.report.history import build_history, history_filename, loop_rounds, metric_ci, write_history
from evalkit.report.summary import write_summary
from evalkit.store import RunStore
from tests.test_report_browser import CHROMIUM, SCREENSHOT_DIR, chromium, uncaught

# the loop's tables as trainloop/record/store.py creates them (copied: evalkit tests don't import trainloop)
LOOP_TABLES = """
CREATE TABLE IF NOT EXISTS loops (id TEXT PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    config_json TEXT NOT NULL, suite_hash TEXT, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS loop_steps (loop_id TEXT NOT NULL, round INTEGER NOT NULL, step TEXT NOT NULL,
    status TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL, attempts INTEGER NOT NULL DEFAULT 1,
    result_json TEXT, error TEXT, PRIMARY KEY (loop_id, round, step));
"""
DAY = 86400.0
T0 = 1_790_000_000.0


def _run(store: RunStore, *, created: float, acc: float, gsm: float, suite_hash: str = "hash-aaaaaaaaaaaa",
         name: str | None = None, tags: dict[str, str] | None = None, model: str = "hf:tiny", suite: str = "core",
         status: str = "complete") -> str:
    rid = store.create_run(identity=f"id-{created}-{suite_hash}", model_spec=model, model_hash="mh", suite_name=suite,
                           suite_hash=suite_hash, suite={}, settings={}, versions={}, name=name, tags=tags)
    for entry, metric, value in (("mmlu", "acc", acc), ("gsm8k", "exact_match", gsm)):
        store.start_entry(rid, entry, {})
        n = 200
        store.complete_entry(rid, entry, [], [
            {"task": entry, "metric": metric, "value": value, "stderr": (value * (1 - value) / n) ** 0.5, "n": n},
            {"task": f"{entry}_sub", "metric": metric, "value": value, "stderr": 0.05, "n": 20},  # not a headline
        ])
    if status == "complete":
        store.finish_run(rid, {"total_s": 1})
    else:
        store.fail_run(rid, "boom")
    store._db.execute("UPDATE runs SET created_at=? WHERE run_id=?", (created, rid))
    store._db.commit()
    return rid


@pytest.fixture()
def history(tmp_path):
    store = RunStore(str(tmp_path / "s.sqlite"))
    base = _run(store, created=T0, acc=0.40, gsm=0.20, name="base", tags={"stage": "sft"})
    r1 = _run(store, created=T0 + DAY, acc=0.45, gsm=0.26, name="round-1", tags={"stage": "loop"})
    r2 = _run(store, created=T0 + 2 * DAY, acc=0.47, gsm=0.31, name="round-2 <b>", tags={"stage": "loop"})
    other = _run(store, created=T0 + 3 * DAY, acc=0.52, gsm=0.33, suite_hash="hash-bbbbbbbbbbbb", name="new items")
    failed = _run(store, created=T0 + 4 * DAY, acc=0.1, gsm=0.1, status="failed")
    elsewhere = _run(store, created=T0 + DAY, acc=0.9, gsm=0.9, suite="other")
    store._db.executescript(LOOP_TABLES)
    for rnd, rid in enumerate((base, r1, r2)):
        store._db.execute("INSERT INTO loop_steps(loop_id, round, step, status, started_at, result_json) VALUES "
                          "(?,?,?,?,?,?)", ("loop0123456789abcdef", rnd, "eval", "done", T0 + rnd,
                                            json.dumps({"run_id": rid, "suite_hash": "hash-aaaaaaaaaaaa"})))
    store._db.execute("INSERT INTO loop_steps(loop_id, round, step, status, started_at, result_json) VALUES "
                      "('loop0123456789abcdef', 3, 'eval', 'running', 0, NULL)")  # unfinished: no point
    store._db.commit()
    reports = tmp_path / "reports"
    write_summary(store, base, str(reports))  # only some runs have a report folder
    write_summary(store, other, str(reports))
    return store, reports, {"base": base, "r1": r1, "r2": r2, "other": other, "failed": failed,
                            "elsewhere": elsewhere}


def _layouts(html: str) -> list[dict]:
    return [json.loads(x) for x in re.findall(r'<script id="chart-\d+-layout" type="application/json">(.*?)</script>',
                                              html, re.S)]


def _traces(html: str) -> list[list[dict]]:
    return [json.loads(x) for x in re.findall(r'<script id="chart-\d+-data" type="application/json">(.*?)</script>',
                                              html, re.S)]


def test_page_lists_every_complete_run_of_the_suite_with_links(history):
    store, reports, ids = history
    path = Path(write_history(store, "core", str(reports)))
    assert path == reports / "history-core.html" and path.is_absolute()
    html = path.read_text(encoding="utf-8")
    rows = re.findall(r'<tr class="[^"]*" data-run="([^"]+)">', html)
    assert rows == [ids["base"], ids["r1"], ids["r2"], ids["other"]]  # time order; failed / other suite left out
    assert ids["failed"] not in html and ids["elsewhere"] not in html
    for key in ("base", "other"):
        assert f'href="{ids[key]}/index.html"' in html
        assert (reports / ids[key] / "index.html").is_file()
    for key in ("r1", "r2"):
        assert f"no report (evalkit report --run {ids[key]})" in html and f'href="{ids[key]}/index.html"' not in html
    assert "round-2 &lt;b&gt;" in html and "round-2 <b>" not in html  # names are escaped
    assert "stage=sft" in html and "hf:tiny" in html
    # headline metrics only (task == entry), value with CI
    assert "mmlu_sub" not in html and "0.4000" in html and "[0.3321, 0.4679]" in html
    # shared plotly asset, referenced relatively
    assert re.findall(r'<script src="([^"]+)"', html) == ["_assets/plotly.min.js"]
    assert (reports / "_assets" / "plotly.min.js").is_file()
    # each run's existing index now links back to the history page
    assert 'href="../history-core.html"' in (reports / ids["base"] / "index.html").read_text(encoding="utf-8")
    assert json.loads((reports / ids["other"] / "pages.json").read_text())[-1]["href"] == "../history-core.html"


def test_figures_axis_titles_units_legend_hash_markers_and_loop_line(history):
    store, reports, ids = history
    html = Path(write_history(store, "core", str(reports))).read_text(encoding="utf-8")
    layouts, traces = _layouts(html), _traces(html)
    assert len(layouts) == len(traces) == html.count('<div class="chart"') == 2  # gsm8k/exact_match, mmlu/acc
    for layout in layouts:
        assert layout["xaxis"]["title"]["text"] == "run start time (UTC)"
        assert re.search(r"\(fraction\)$", layout["yaxis"]["title"]["text"])
        assert layout["legend"]["orientation"] == "h" and layout["legend"]["y"] < 0
    assert {lay["yaxis"]["title"]["text"] for lay in layouts} == {"acc (fraction)", "exact_match (fraction)"}
    for fig in traces:
        points = [t for t in fig if t["mode"] == "markers"]
        assert len(points) == 2 and points[0]["marker"]["symbol"] != points[1]["marker"]["symbol"]  # one per hash
        assert sum(len(t["x"]) for t in points) == 4
        assert "hash-aaaaaaa" in points[0]["text"][0] and "hash-bbbbbbb" in points[1]["text"][0]
        assert all(len(t["error_y"]["array"]) == len(t["x"]) for t in points)
        lines = [t for t in fig if t["mode"] == "lines"]
        assert [t["name"] for t in lines] == ["loop loop01234567"] and len(lines[0]["y"]) == 3
    mmlu = traces[[lay["title"]["text"] for lay in layouts].index("mmlu · acc")]
    assert [t for t in mmlu if t["mode"] == "lines"][0]["y"] == [0.40, 0.45, 0.47]  # round order
    # the other hash is marked in the table
    assert 'id="hash-warning"' in html and html.count('<span class="badge">≠ latest</span>') == 3
    assert "loop loop01234567 round 1" in html


def test_loop_tables_absent_or_broken_degrade_gracefully(tmp_path):
    store = RunStore(str(tmp_path / "s.sqlite"))
    _run(store, created=T0, acc=0.5, gsm=0.5)
    assert loop_rounds(store) == {}
    data = build_history(store, "core", str(tmp_path / "reports"))
    assert data["loops"] == {} and all(t["mode"] == "markers" for c in data["charts"] for t in c["traces"])
    store._db.execute("CREATE TABLE loop_steps (loop_id TEXT)")  # an unexpected shape: no lines, no crash
    assert loop_rounds(store) == {}
    html = Path(write_history(store, "core", str(tmp_path / "reports"))).read_text(encoding="utf-8")
    assert 'id="hash-warning"' not in html and "Dotted lines" not in html


def test_ci_from_stderr_or_stored_interval_and_file_name():
    lo, hi = metric_ci({"value": 0.5, "stderr": 0.1})
    assert lo == pytest.approx(0.5 - 0.196, abs=1e-3) and hi == pytest.approx(0.5 + 0.196, abs=1e-3)
    assert metric_ci({"value": 0.5, "stderr": 0.1, "ci_low": 0.2, "ci_high": 0.6}) == (0.2, 0.6)
    assert metric_ci({"value": 0.5, "stderr": None}) == (None, None)
    assert history_filename("my suite/v2") == "history-my_suite_v2.html"


def test_unknown_suite_is_a_one_line_error(tmp_path, capsys):
    store = RunStore(str(tmp_path / "s.sqlite"))
    with pytest.raises(EvalkitError, match="no complete runs"):
        write_history(store, "nope", str(tmp_path))
    store.close()
    assert main(["--store", str(tmp_path / "s.sqlite"), "history", "--suite", "nope"]) == 2
    assert "evalkit: error:" in capsys.readouterr().err


def test_cli_prints_the_absolute_path(history, capsys, monkeypatch, tmp_path):
    store, _, _ = history
    monkeypatch.chdir(tmp_path)
    assert main(["--store", store.path, "history", "--suite", "core", "--reports-dir", "rel"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out == str(tmp_path / "rel" / "history-core.html") and Path(out).is_file()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")
def test_history_page_in_chromium_no_errors_and_screenshot(history, tmp_path, capsys):
    store, reports, ids = history
    page = Path(write_history(store, "core", str(reports)))
    done = chromium(tmp_path / "profile-a", "--dump-dom", page.as_uri())
    dom = done.stdout
    assert done.returncode == 0 and "</html>" in dom, done.stderr[-2000:]
    errors = re.search(r'<div id="js-errors"([^>]*)>(.*?)</div>', dom, re.S)
    assert errors and "hidden" in errors.group(1) and errors.group(2).strip() == "", errors.group(0)
    assert not uncaught(done.stderr), uncaught(done.stderr)
    assert re.search(r'id="chart-status"[^>]*data-charts="2"', dom)
    assert dom.count('class="main-svg"') >= 2  # plotly drew both figures
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "history.png"
    shot.unlink(missing_ok=True)
    done = chromium(tmp_path / "profile-b", "--hide-scrollbars", "--window-size=1000,1100", f"--screenshot={shot}",
                    page.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < shot.stat().st_size < 300_000
    with capsys.disabled():  # docs/history.png is a copy of it, refreshed by hand (tests never write tracked files)
        print(f"\n[browser test] screenshot of the history page: {shot}")

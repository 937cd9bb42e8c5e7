"""Report hygiene: one shared plotly bundle per reports folder (none per run), a documented
reports location (``--reports-dir`` / ``$EVALKIT_REPORTS``, always absolute), no empty "Pages:"
line on the index, titled axes with units on every chart and the map's legend below the plot.

The pages are opened in headless Chromium (no console errors, the shared asset loads through its
relative ``../_assets/plotly.min.js``); screenshots land in ``reports/browser-test/``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import pytest

from evalkit.analysis.clusters import cluster_run
from evalkit.analysis.clusters.embed import hashing_embed
from evalkit.report.clusters_page import ASSETS_DIR, PLOTLY_FILE, ensure_plotly_js
from evalkit.report.compare import write_compare_report
from evalkit.report.links import add_page_link
from evalkit.report.run_report import write_run_report
from evalkit.report.summary import write_summary
from tests.clusterdata import build_store
from tests.test_report_browser import CHROMIUM, SCREENSHOT_DIR, chromium, uncaught

TEMPLATES = Path(__file__).resolve().parents[1] / "evalkit" / "report" / "templates"
KL = {"policy": "p", "ref": "r", "method": "adapter", "mean_kl": 0.05, "k1": 0.04, "k3": 0.06,
      "per_prompt": [{"prompt": "hi", "n_tokens": 6, "kl": 0.1, "k1": 0.1, "k3": 0.1, "kl_sum": 0.6,
                      "token_kl": [0.0, 0.05, 0.1, 0.2, 0.2, 0.4]}]}
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two runs (two stores) reported into the same folder, plus a KL page beside them."""
    tmp = tmp_path_factory.mktemp("hygiene")
    reports = tmp / "reports"
    indexes = []
    for name in ("a", "b"):
        store, rid = build_store(str(tmp / f"{name}.sqlite"))
        cluster_run(store, rid, embedder=hashing_embed, n_examples=5)
        indexes.append(Path(write_run_report(store, rid, str(reports))))
    kl_page = Path(write_compare_report(None, "kl1", str(reports), kl=KL))
    return tmp, reports, indexes, kl_page


# ------------------------------------------------------------------ the shared plotly asset
def test_one_shared_plotly_file_for_two_runs(two_runs):
    _, reports, indexes, _ = two_runs
    assert len({p.parent for p in indexes}) == 2
    assert sorted(p.name for p in reports.rglob(PLOTLY_FILE)) == [PLOTLY_FILE]  # exactly one copy
    asset = reports / ASSETS_DIR / PLOTLY_FILE
    assert asset.is_file() and asset.stat().st_size > 1_000_000
    for index in indexes:
        assert not (index.parent / PLOTLY_FILE).exists()
        page = (index.parent / "clusters.html").read_text(encoding="utf-8")
        srcs = re.findall(r'<script src="([^"]+)"', page)
        assert srcs == ["../_assets/plotly.min.js"]
        assert (index.parent / srcs[0]).resolve() == asset.resolve()


def test_asset_rewritten_only_when_content_differs(tmp_path):
    path = Path(ensure_plotly_js(str(tmp_path)))
    mtime = path.stat().st_mtime_ns
    os.utime(path, ns=(mtime - 10_000_000_000, mtime - 10_000_000_000))
    before = path.stat().st_mtime_ns
    ensure_plotly_js(str(tmp_path))
    assert path.stat().st_mtime_ns == before  # same content: left alone
    data = bytearray(path.read_bytes())
    data[100] = ord("X") if data[100] != ord("X") else ord("Y")  # same size, different content
    path.write_bytes(bytes(data))
    ensure_plotly_js(str(tmp_path))
    from plotly.offline import get_plotlyjs

    assert path.read_bytes() == get_plotlyjs().encode("utf-8")


def test_old_per_run_copy_is_removed(tmp_path):
    store, rid = build_store(str(tmp_path / "s.sqlite"))
    r = cluster_run(store, rid, embedder=hashing_embed, n_examples=5, save=False)
    run_dir = tmp_path / "reports" / rid
    run_dir.mkdir(parents=True)
    (run_dir / PLOTLY_FILE).write_text("// stale per-run copy")
    write_run_report(store, rid, str(tmp_path / "reports"), clusters=r)
    assert not (run_dir / PLOTLY_FILE).exists() and (tmp_path / "reports" / ASSETS_DIR / PLOTLY_FILE).is_file()


# ------------------------------------------------------------------ the reports location
def test_reports_dir_default_honours_env(monkeypatch, tmp_path):
    from evalkit.cli import build_parser
    from evalkit.env import reports_dir_default

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EVALKIT_REPORTS", raising=False)
    assert reports_dir_default() == str(tmp_path / "reports")
    assert build_parser().parse_args(["report"]).reports_dir == str(tmp_path / "reports")
    target = tmp_path / "elsewhere" / "reps"
    monkeypatch.setenv("EVALKIT_REPORTS", str(target))
    assert reports_dir_default() == str(target)
    parser = build_parser()
    for argv in (["report"], ["compare", "--a", "x", "--b", "y"], ["loop"]):
        assert parser.parse_args(argv).reports_dir == str(target), argv
    # an explicit relative flag wins, made absolute (commands print where they wrote)
    assert parser.parse_args(["report", "--reports-dir", "rel"]).reports_dir == str(tmp_path / "rel")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("report", "eval", "judge-agreement", "kl", "loop"):
        action = sub.choices[name]._option_string_actions["--reports-dir"]
        assert "EVALKIT_REPORTS" in action.help and "./reports" in action.help


def test_writers_default_to_env_and_return_absolute_paths(monkeypatch, tmp_path):
    store, rid = build_store(str(tmp_path / "s.sqlite"))
    monkeypatch.setenv("EVALKIT_REPORTS", str(tmp_path / "env-reports"))
    assert write_summary(store, rid) == str(tmp_path / "env-reports" / rid / "index.html")
    monkeypatch.chdir(tmp_path)
    got = write_compare_report(None, "k", "rel-reports", kl=KL)
    assert os.path.isabs(got) and got == str(tmp_path / "rel-reports" / "compare-k" / "index.html")


# ------------------------------------------------------------------ the index page
def test_index_has_no_empty_pages_line(tmp_path):
    store, rid = build_store(str(tmp_path / "s.sqlite"))
    index = Path(write_summary(store, rid, str(tmp_path)))
    html = index.read_text(encoding="utf-8")
    assert "Pages:" not in html and 'id="extra-pages"' not in html  # no links: no nav at all
    add_page_link(str(index.parent), "Judge", "judge.html", "later page")  # patched in place
    html = index.read_text(encoding="utf-8")
    nav = re.search(r'<nav class="pages" id="pages">Pages: <ul id="extra-pages">(.*?)</ul></nav>', html)
    assert nav and 'href="judge.html"' in nav.group(1)
    write_summary(store, rid, str(tmp_path))  # a re-render keeps it
    assert 'href="judge.html"' in index.read_text(encoding="utf-8")


def test_legacy_index_still_patched(tmp_path):
    from evalkit.report.links import BEGIN, END

    (tmp_path / "index.html").write_text(f'<nav>Pages: <ul id="extra-pages">{BEGIN}{END}</ul></nav>')
    add_page_link(str(tmp_path), "Judge", "judge.html")
    html = (tmp_path / "index.html").read_text()
    assert html.count("<nav") == 1 and '<ul id="extra-pages"><!-- extra-pages:begin --><li><a href="judge.html">' in html


def test_no_blank_lines_in_index(two_runs):
    _, _, indexes, _ = two_runs
    for index in indexes:
        lines = index.read_text(encoding="utf-8").splitlines()
        assert all(line.strip() for line in lines), [i for i, line in enumerate(lines) if not line.strip()]
        assert not re.search(r"Pages:\s*<ul[^>]*>\s*(<!--[^>]*-->\s*)*</ul>", "\n".join(lines))


# ------------------------------------------------------------------ charts: axis titles and legends
def test_every_svg_chart_template_has_both_axis_titles():
    svgs = 0
    for tpl in TEMPLATES.glob("*.html"):
        for svg in re.findall(r"<svg.*?</svg>", tpl.read_text(encoding="utf-8"), re.S):
            svgs += 1
            assert 'class="axis-title x"' in svg and 'class="axis-title y"' in svg, f"{tpl.name}: {svg[:120]}"
    assert svgs >= 4  # reliability, deltas, KL histogram, length bias


def _axis_titles(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<text class="axis-title (x|y)"[^>]*>([^<]*)</text>', html)


def test_rendered_charts_have_titles_with_units(two_runs):
    _, _, indexes, kl_page = two_runs
    titles = _axis_titles(indexes[0].read_text(encoding="utf-8"))
    assert ("x", "confidence (probability)") in titles and ("y", "accuracy (fraction correct)") in titles
    titles = dict(_axis_titles(kl_page.read_text(encoding="utf-8")))
    assert titles == {"x": "per-token KL(policy ‖ reference) (nats)", "y": "count (tokens)"}
    for _, text in _axis_titles(indexes[0].read_text(encoding="utf-8")) + list(titles.items()):
        assert re.search(r"\(.+\)", text), f"no unit in axis title {text!r}"


def test_judge_length_chart_has_titles():
    from evalkit.report.judge import length_chart

    c = length_chart({"bins": [{"lo": None, "hi": 0.8, "n": 4, "judge_a_rate": 0.5, "human_a_rate": 0.25}]})
    assert "(" in c["x_title"] and "(" in c["y_title"]


def test_every_plotly_figure_has_axis_titles_and_legend_below(two_runs):
    _, _, indexes, _ = two_runs
    n_figures = 0
    for index in indexes:
        for page in index.parent.glob("*.html"):
            html = page.read_text(encoding="utf-8")
            calls = html.count("Plotly.newPlot(")
            layouts = re.findall(r'<script id="[\w-]*layout" type="application/json">(.*?)</script>', html, re.S)
            assert calls == len(layouts), page  # every figure's layout is inspectable JSON
            for raw in layouts:
                n_figures += 1
                layout = json.loads(raw)
                for axis in ("xaxis", "yaxis"):
                    assert layout[axis]["title"]["text"].strip(), (page, axis)
                assert layout["legend"]["orientation"] == "h" and layout["legend"]["y"] < 0  # below the plot area
    assert n_figures == 2


# ------------------------------------------------------------------ in a real browser
def _js_errors(dom: str) -> str:
    m = re.search(r'<div id="js-errors"([^>]*)>(.*?)</div>', dom, re.S)
    return "" if m is None else ("" if "hidden" in m.group(1) and not m.group(2).strip() else m.group(2))


@needs_chromium
@pytest.mark.browser
def test_pages_render_without_console_errors(two_runs):
    tmp, reports, indexes, kl_page = two_runs
    for i, index in enumerate(indexes):
        for page in ("index.html", "clusters.html"):
            done = chromium(tmp / f"profile-{i}-{page}", "--dump-dom", (index.parent / page).as_uri())
            dom = done.stdout
            assert done.returncode == 0 and "</html>" in dom, done.stderr[-2000:]
            assert not uncaught(done.stderr), uncaught(done.stderr)
            assert _js_errors(dom) == "", _js_errors(dom)
            if page == "clusters.html":  # the shared asset loaded and plotly drew titled axes
                assert re.search(r'id="map-status"[^>]*data-points="\d+"', dom)
                assert "UMAP 1 (arbitrary units)" in dom and "UMAP 2 (arbitrary units)" in dom
                _assert_legend_below_plot(dom)
            else:
                assert "Pages:" in dom and 'href="clusters.html"' in dom
    done = chromium(tmp / "profile-kl", "--dump-dom", kl_page.as_uri())
    assert done.returncode == 0 and not uncaught(done.stderr) and "count (tokens)" in done.stdout


def _assert_legend_below_plot(dom: str) -> None:
    """The legend group's translate-y lies below the plot area (the main drag rectangle's bottom)."""
    legend = re.search(r'<g class="legend"[^>]*transform="translate\(([-\d.]+),\s*([-\d.]+)\)"', dom)
    drag = re.search(r'<rect class="nsewdrag drag"[^>]*?y="([-\d.]+)"[^>]*?height="([-\d.]+)"', dom)
    if drag is None:  # attribute order differs between plotly versions
        drag = re.search(r'<rect class="nsewdrag drag"[^>]*?height="([-\d.]+)"[^>]*?y="([-\d.]+)"', dom)
        y, h = float(drag.group(2)), float(drag.group(1))
    else:
        y, h = float(drag.group(1)), float(drag.group(2))
    assert legend, "no plotly legend in the DOM"
    assert float(legend.group(2)) >= y + h, (legend.group(0), y, h)


@needs_chromium
@pytest.mark.browser
def test_screenshots(two_runs, capsys):
    tmp, _, indexes, kl_page = two_runs
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shots = {"hygiene-index.png": indexes[0].parent / "index.html",
             "hygiene-clusters.png": indexes[1].parent / "clusters.html", "hygiene-kl.png": kl_page}
    for name, page in shots.items():
        shot = SCREENSHOT_DIR / name
        shot.unlink(missing_ok=True)
        done = chromium(tmp / f"profile-shot-{name}", "--hide-scrollbars", "--window-size=1280,1400",
                        f"--screenshot={shot}", page.as_uri())
        assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        assert not uncaught(done.stderr), uncaught(done.stderr)
    with capsys.disabled():
        print(f"\n[hygiene test] screenshots: {', '.join(str(SCREENSHOT_DIR / n) for n in shots)}")

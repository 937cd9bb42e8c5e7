"""The run report in a real headless Chromium: the pages load from disk with no network and no
JS errors, the plotly map draws every sample, the cluster table has one row per stored cluster
and sorts, model text stays inert, and a screenshot is saved (path printed).

JS errors are caught twice: the page records ``window.onerror``/``console.error``/failed loads
into ``#js-errors`` (visible in ``--dump-dom``), and Chromium's console log goes to stderr
(``--enable-logging=stderr``), where an uncaught exception shows as "Uncaught ...".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evalkit.analysis.clusters import cluster_run
from evalkit.analysis.clusters.embed import hashing_embed
from evalkit.report.run_report import write_run_report
from tests.clusterdata import build_store


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


CHROMIUM = _find_chromium()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")]
SCREENSHOT_DIR = Path(__file__).resolve().parents[1] / "reports" / "browser-test"


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def uncaught(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    store, rid = build_store(str(tmp / "s.sqlite"))
    result = cluster_run(store, rid, embedder=hashing_embed, n_examples=100)  # stored; every failure listed
    index = write_run_report(store, rid, str(tmp / "reports"))
    return store, result, Path(index).parent, tmp


def test_cluster_page_renders_and_sorts_without_js_errors(report):
    store, result, folder, tmp = report
    done = chromium(tmp / "profile-a", "--dump-dom", (folder / "clusters.html").as_uri() + "#sort=size:desc")
    dom = done.stdout
    assert done.returncode == 0 and "</html>" in dom, done.stderr[-2000:]
    errors = re.search(r'<div id="js-errors"([^>]*)>(.*?)</div>', dom, re.S)
    assert errors and "hidden" in errors.group(1) and errors.group(2).strip() == "", errors.group(0) if errors else dom[:500]
    assert not uncaught(done.stderr), uncaught(done.stderr)
    # the map: plotly drew one marker per stored member
    assert re.search(r'id="map-status"[^>]*data-points="(\d+)"', dom).group(1) == str(len(result.members))
    assert dom.count('class="point"') == len(result.members)
    # the table: one row per stored cluster, sorted by size (largest first) from the URL hash
    n_stored = store._db.execute("SELECT COUNT(*) FROM clusters WHERE clustering_id=?", (result.clustering_id,)).fetchone()[0]
    table = dom.split('<table id="clusters"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr[^>]*data-cluster=", table)
    assert len(rows) == n_stored == len(result.clusters)
    sizes = [int(s) for s in re.findall(r'<td class="num" data-sort="(\d+)">\d+</td><td class="num" data-sort="\d+">', table)]
    assert len(sizes) == n_stored and sizes == sorted(sizes, reverse=True)
    # model text is shown, escaped, never executed
    # (the payload's onerror would call __record('xss executed') and fill #js-errors, asserted empty above)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and '<img src="x"' not in dom


def test_index_page_links_and_reliability(report):
    _, _, folder, tmp = report
    done = chromium(tmp / "profile-b", "--dump-dom", (folder / "index.html").as_uri())
    dom = done.stdout
    assert done.returncode == 0 and not uncaught(done.stderr)
    assert 'href="clusters.html"' in dom and 'id="reliability-mmlu"' in dom and dom.count('class="acc"') >= 1
    assert "prompt_level_strict_acc" in dom


def test_screenshot(report, capsys):
    _, _, folder, tmp = report
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "clusters.png"
    shot.unlink(missing_ok=True)
    done = chromium(tmp / "profile-c", "--hide-scrollbars", "--window-size=1280,1800", f"--screenshot={shot}",
                    (folder / "clusters.html").as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    with capsys.disabled():
        print(f"\n[browser test] screenshot of the cluster page: {shot}")


def test_error_capture_works(report):
    """The detector itself: without plotly.min.js the page must report the failure."""
    _, _, folder, tmp = report
    broken = tmp / "broken"
    broken.mkdir(exist_ok=True)
    shutil.copy(folder / "clusters.html", broken / "clusters.html")
    dom = chromium(tmp / "profile-d", "--dump-dom", (broken / "clusters.html").as_uri()).stdout
    errors = re.search(r'<div id="js-errors"([^>]*)>(.*?)</div>', dom, re.S)
    assert errors and "hidden" not in errors.group(1) and "plotly.min.js" in errors.group(2)

"""The hook other pages use to appear in a run's index: ``reports/<run_id>/pages.json``.

Why a manifest file: pages for a run are written at different times by different commands
(clusters now, judge / compare / loop later). Each writer calls :func:`add_page_link`; the
link is kept in ``pages.json`` (so the next full re-render of the index shows it) and patched
into an existing ``index.html`` between its ``extra-pages`` markers, so no store access or
re-render is needed. The markers wrap the whole ``Pages:`` nav, which is left out when there are
no links (no empty "Pages:" line). Links are relative to the run folder (``clusters.html``,
``../compare-<id>/index.html``); re-adding the same href replaces its title/note.
"""

from __future__ import annotations

import json
import os
from html import escape
from typing import Any

MANIFEST = "pages.json"
BEGIN, END = "<!-- extra-pages:begin -->", "<!-- extra-pages:end -->"
LEGACY_LIST = '<ul id="extra-pages">'


def read_page_links(run_dir: str) -> list[dict[str, str]]:
    path = os.path.join(run_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            data: Any = json.load(fh)
    except (OSError, ValueError):
        return []
    return [{"title": str(d.get("title", "")), "href": str(d.get("href", "")), "note": str(d.get("note", ""))}
            for d in data if isinstance(d, dict) and d.get("href")] if isinstance(data, list) else []


def add_page_link(run_dir: str, title: str, href: str, note: str = "") -> list[dict[str, str]]:
    """Register a page in the run's index (idempotent by href); returns the updated list."""
    os.makedirs(run_dir, exist_ok=True)
    links = [link for link in read_page_links(run_dir) if link["href"] != href]
    links.append({"title": title, "href": href, "note": note})
    tmp = os.path.join(run_dir, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(links, fh, indent=1)
    os.replace(tmp, os.path.join(run_dir, MANIFEST))
    index = os.path.join(run_dir, "index.html")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as fh:
            html = fh.read()
        if BEGIN in html and END in html:
            head, rest = html.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            legacy = head.endswith(LEGACY_LIST)  # index written before the nav moved inside the markers
            with open(index, "w", encoding="utf-8") as fh:
                fh.write(head + BEGIN + (render_links(links) if legacy else render_nav(links)) + END + tail)
    return links


def render_links(links: list[dict[str, str]]) -> str:
    """The ``<li>`` items of the index's extra-pages list (escaped)."""
    return "".join(
        f'<li><a href="{escape(link["href"])}">{escape(link["title"] or link["href"])}</a>'
        + (f" — {escape(link['note'])}" if link.get("note") else "") + "</li>"
        for link in links
    )


def render_nav(links: list[dict[str, str]]) -> str:
    """The index's ``Pages:`` nav with its list, or nothing when there are no links."""
    if not links:
        return ""
    return f'<nav class="pages" id="pages">Pages: <ul id="extra-pages">{render_links(links)}</ul></nav>'

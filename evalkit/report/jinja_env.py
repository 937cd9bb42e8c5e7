"""The Jinja environment every HTML page is rendered with: one place for autoescaping and filters.

Why one: pages show model outputs and dataset text, which are untrusted; each page building
its own ``Environment`` is one chance to forget ``autoescape``. Pages outside ``evalkit/report``
(the loop's report) pass their own template folder; evalkit's shared templates stay findable.
"""

from __future__ import annotations

import os

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


def environment(*extra_dirs: str) -> Environment:
    """Jinja2 over ``extra_dirs`` (searched first) and evalkit's report templates, autoescaping .html."""
    return Environment(loader=FileSystemLoader([*extra_dirs, TEMPLATES]),
                       autoescape=select_autoescape(["html", "htm", "xml"]))

"""How commands print: aligned tables for people, one JSON object last on stdout for programs."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from evalkit.jsonsafe import dumps


def fmt(v: Any) -> str:
    """A table cell: ``-`` for missing numbers, 4 decimals for floats."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict[str, Any]], cols: list[str], out: Any = None) -> None:
    out = out or sys.stdout  # looked up per call, so redirected/captured stdout is honoured
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)), file=out)


def human_out(as_json: bool) -> Any:
    """Where the human-readable lines go: stderr under ``--json`` (stdout then ends with the JSON line)."""
    return sys.stderr if as_json else sys.stdout


def print_json(value: Any) -> None:
    """The machine-readable last line: valid JSON (NaN/inf as null)."""
    print(dumps(value, sort_keys=False))


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))

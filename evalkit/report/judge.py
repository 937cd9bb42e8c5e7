"""The judge-agreement page (``reports/judge-<id>/index.html``).

Why inline SVG (like the comparison page): the page must open from disk with no network, and a
confusion matrix, two rates and a grouped bar chart do not justify inlining 4.8 MB of plotly.
The input is the JSON-able dict :func:`evalkit.judge.agreement.run_agreement` returns (or the
same dict read back with :func:`evalkit.store.judgments.get_judge_run`), so a stored run renders
the same page later.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from evalkit.env import reports_dir_default
from evalkit.report.jinja_env import environment
from evalkit.report.summary import fmt

# What a strong judge and humans reach (MT-Bench paper, Zheng et al. 2023, expert labels).
ANCHORS = [
    {"who": "GPT-4 judge vs experts (MT-Bench)", "agreement": 0.66, "agreement_no_ties": 0.85, "position_consistency": 0.65},
    {"who": "human vs human experts (MT-Bench)", "agreement": 0.63, "agreement_no_ties": 0.81, "position_consistency": None},
]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ratio_label(lo: float | None, hi: float | None) -> str:
    def r(v: float) -> str:
        return f"{2 ** v:.2g}×"

    if lo is None:
        return f"< {r(hi)}" if hi is not None else "all"
    if hi is None:
        return f"> {r(lo)}"
    return f"{r(lo)}–{r(hi)}"


def length_chart(bias: Mapping[str, Any], width: int = 640, height: int = 240) -> dict[str, Any] | None:
    """Grouped bars: per length-ratio bin, the rate at which ``a`` wins for the judge and the humans.
    Both axes are titled with units; the judge/human key is in the text above the chart, not over the bars."""
    bins = bias.get("bins") or []
    if not bins or not any(b.get("n") for b in bins):
        return None
    plot_h, top, left = height - 70, 10, 58
    group_w = (width - left - 10) / len(bins)
    bars, labels = [], []
    for i, b in enumerate(bins):
        x0 = left + i * group_w
        for k, (key, cls) in enumerate((("judge_a_rate", "judge"), ("human_a_rate", "human"))):
            v = b.get(key)
            h = plot_h * float(v) if _finite(v) else 0.0
            bars.append({"x": round(x0 + 6 + k * (group_w - 12) / 2, 2), "w": round((group_w - 14) / 2, 2),
                         "y": round(top + plot_h - h, 2), "h": round(h, 2), "cls": cls,
                         "title": f"{cls}: a wins {fmt(v)} (n={b.get('n')})"})
        labels.append({"x": round(x0 + group_w / 2, 2), "text": _ratio_label(b.get("lo"), b.get("hi")), "n": b.get("n")})
    grid = [{"y": round(top + plot_h * (1 - g), 2), "text": f"{g:.2g}"} for g in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return {"width": width, "height": height, "bars": bars, "labels": labels, "grid": grid, "left": left,
            "base": top + plot_h, "mid_y": top + plot_h / 2,
            "x_title": "length ratio len(a)/len(b) (characters, binned)",
            "y_title": "a wins (fraction of pairs)"}


def confusion_cells(conf: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    """The matrix with a background shade proportional to each cell's share of its row."""
    rows = []
    for row in conf.get("matrix") or []:
        total = sum(row) or 1
        rows.append([{"count": c, "share": c / total, "shade": round(255 - 150 * c / total)} for c in row])
    return rows


def render_judge(result: Mapping[str, Any], max_items: int = 300) -> str:
    r = dict(result)
    return environment().get_template("judge.html").render(
        r=r, anchors=ANCHORS, chart=length_chart(r.get("length_bias") or {}),
        cells=confusion_cells(r.get("confusion") or {}), items=(r.get("items") or [])[:max_items],
        n_items=len(r.get("items") or []), fmt=fmt, pct=_pct,
    )


def write_judge_report(result: Mapping[str, Any], reports_dir: str | None = None) -> str:
    """Write ``<reports_dir>/judge-<result['id']>/index.html`` and return its absolute path
    (``reports_dir`` defaults to :func:`evalkit.env.reports_dir_default`)."""
    rid = str(result.get("id") or "unsaved")
    out_dir = os.path.join(os.path.abspath(reports_dir or reports_dir_default()), f"judge-{rid}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_judge(result))
    return path


def _pct(x: Any) -> str:
    return f"{100 * float(x):.1f}%" if _finite(x) else "–"


def _interval(ci: Any, show: Any) -> str:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or not all(_finite(v) for v in ci):
        return "–"
    return f"[{show(ci[0])}, {show(ci[1])}]"


def _num(x: Any) -> str:
    return f"{float(x):.2f}" if _finite(x) else "–"


def agreement_table(result: Mapping[str, Any]) -> str:
    """The readable summary ``evalkit judge-agreement`` prints: each statistic with its 95% CI and
    n, then a warning for a judge that mostly picks a position, the MT-Bench anchors and the
    injection probe. Works on a fresh result or one read back from the store (older stored runs
    lack a few keys; those cells show "–")."""
    r = result
    n = r.get("n")
    kappa_ci = r.get("kappa_ci_note") or _interval(r.get("kappa_ci"), _num)
    rows = [
        ("agreement (with ties)", _pct(r.get("agreement")), _interval(r.get("agreement_ci"), _pct), n,
         "3-way exact match a / b / tie"),
        ("agreement (without ties)", _pct(r.get("agreement_no_ties")), _interval(r.get("agreement_no_ties_ci"), _pct),
         r.get("n_no_ties"), "pairs where neither humans nor judge said tie"),
        ("judge tie rate", _pct(r.get("judge_tie_rate")), _interval(r.get("judge_tie_rate_ci"), _pct), n,
         f"human tie rate {_pct(r.get('human_tie_rate'))}"),
        ("position consistency", _pct(r.get("position_consistency")), _interval(r.get("position_consistency_ci"), _pct),
         r.get("n_consistency"), "same verdict after swapping the answers"),
        ("Cohen's κ", _num(r.get("kappa")), kappa_ci, n, "agreement beyond chance (0 chance, 1 perfect)"),
        ("first position wins", _pct(r.get("first_position_rate")), "–", r.get("n_first_position"),
         "single-order verdicts; 50% = no position bias"),
    ]
    head = ("statistic", "estimate", "95% CI", "n", "")
    cells = [head] + [tuple("–" if c is None else str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = []
    who = r.get("judge")
    if who is not None:
        lines.append(f"judge {who} vs human labels on {n} pairs")
    for k, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if 0 < i < 4 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     + ("  " + row[4] if row[4] else "").rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    if r.get("position_warning"):
        lines.append(f"WARNING: position consistency {_pct(r.get('position_consistency'))} "
                     f"(95% CI upper {_pct((r.get('position_consistency_ci') or [None, None])[1])}): "
                     f"{r['position_warning']}")
    a = ANCHORS[0]
    lines.append(f"reference: {a['who']} {_pct(a['agreement'])} with ties, {_pct(a['agreement_no_ties'])} without, "
                 f"position consistency {_pct(a['position_consistency'])}")
    rob = r.get("robustness") or {}
    if rob.get("n"):
        lines.append(f"prompt injection: verdict changed on {_pct(rob.get('flip_rate'))} "
                     f"{_interval(rob.get('flip_rate_ci'), _pct)} of {rob['n']} pairs")
    return "\n".join(lines)

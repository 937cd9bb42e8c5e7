"""Flipped items: the documents behind a paired delta (right→wrong, wrong→right).

Why: a significant Δ says *that* two runs differ, the flipped documents say *where*. The values
are the ones the paired comparison uses (:func:`~evalkit.analysis.paired.values.per_sample_value`,
samples paired by ``(task, doc_id)`` within an entry, pairs with no usable value on either side
dropped), so the counts here add up to the row's ``a only / b only``.

* 0/1 metrics: right→wrong (1 in a, 0 in b) and wrong→right, complete counts, lists capped.
* Pooled ratio metrics (IFEval's ``inst_level_*``, one list of instruction results per prompt):
  a prompt is *right* when every instruction passed (prompt-level pass/fail), so a flip is a
  prompt that went from all-pass to not, or back.
* Other metrics (continuous scores): no right/wrong; the largest ``|b − a|`` documents instead.

Pure: inputs are plain sample dicts as :meth:`evalkit.store.RunStore.samples` returns them
(``entry, task, doc_id, prompt, target, responses, filtered, loglik, metrics``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from evalkit.analysis.paired.values import cluster_items, is_binary, per_sample_value
from evalkit.jsonsafe import json_safe

CAP = 25  # items listed per direction; the counts are always complete
TEXT_CAP = 4000  # characters kept of one prompt (its end) / target / output (its start); the page says so
MODE_BINARY = "binary"  # right→wrong / wrong→right on a 0/1 metric
MODE_CLUSTER = "prompt-level"  # pooled ratio metric reduced to all-items-pass per document
MODE_DELTA = "largest-delta"  # non-binary metric: largest |b − a|
SKIP_METRICS = ("ece", "brier")


@dataclass
class FlipItem:
    task: str
    doc_id: int
    value_a: float
    value_b: float
    input: str
    target: str
    output_a: str
    output_b: str
    truncated: bool = False  # some text was cut at TEXT_CAP characters

    @property
    def delta(self) -> float:
        return self.value_b - self.value_a


@dataclass
class Flips:
    """One entry's flipped documents between run a and run b on ``metric``."""

    entry: str
    metric: str
    mode: str  # MODE_BINARY, MODE_CLUSTER or MODE_DELTA
    n_paired: int
    n_right_to_wrong: int = 0  # binary/cluster modes: right in a, wrong in b
    n_wrong_to_right: int = 0
    n_up: int = 0  # delta mode: documents with b > a / b < a
    n_down: int = 0
    cap: int = CAP
    right_to_wrong: list[FlipItem] = field(default_factory=list)
    wrong_to_right: list[FlipItem] = field(default_factory=list)
    largest_delta: list[FlipItem] = field(default_factory=list)  # delta mode, by |Δ| descending

    @property
    def binary(self) -> bool:
        return self.mode != MODE_DELTA

    @property
    def more_right_to_wrong(self) -> int:
        return self.n_right_to_wrong - len(self.right_to_wrong)

    @property
    def more_wrong_to_right(self) -> int:
        return self.n_wrong_to_right - len(self.wrong_to_right)

    @property
    def more_largest_delta(self) -> int:
        return self.n_up + self.n_down - len(self.largest_delta)

    def summary(self) -> str:
        """E.g. "12 right→wrong, 19 wrong→right of 300 paired"."""
        if self.binary:
            return f"{self.n_right_to_wrong} right→wrong, {self.n_wrong_to_right} wrong→right of {self.n_paired} paired"
        return f"{self.n_down} lower in b, {self.n_up} higher in b of {self.n_paired} paired"

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def output_text(sample: Mapping[str, Any]) -> str:
    """What the model answered: its raw response(s) (with the filtered answer when it differs),
    else, for multiple choice, the index of the highest log-likelihood choice."""
    responses = [r for r in (sample.get("responses") or []) if r is not None]
    text = "\n---\n".join(_text(r) for r in responses)
    filtered = sample.get("filtered")
    if isinstance(filtered, Mapping) and filtered:
        shown = "; ".join(f"{k}: {_text(v)}" for k, v in filtered.items() if _text(v) and _text(v) != text)
        if shown:
            text = f"{text}\n[filtered] {shown}" if text else f"[filtered] {shown}"
    if not text:
        ll = sample.get("loglik") or sample.get("loglikelihoods")
        if isinstance(ll, (list, tuple)) and ll:
            nums = [x if isinstance(x, (int, float)) else (x[0] if isinstance(x, (list, tuple)) and x else float("-inf")) for x in ll]
            text = f"choice {max(range(len(nums)), key=lambda i: nums[i])} (highest log-likelihood)"
    return text


def _cut(s: str, tail: bool = False) -> tuple[str, bool]:
    """At most TEXT_CAP characters: the head, or with ``tail`` the end (a few-shot prompt's own
    question comes last), marked with an ellipsis."""
    if len(s) <= TEXT_CAP:
        return s, False
    return ("…" + s[-TEXT_CAP:], True) if tail else (s[:TEXT_CAP] + "…", True)


def _item(a: Mapping[str, Any], b: Mapping[str, Any], va: float, vb: float) -> FlipItem:
    inp, t1 = _cut(_text(a.get("prompt") or b.get("prompt")), tail=True)
    tgt, t2 = _cut(_text(a.get("target") if a.get("target") is not None else b.get("target")))
    oa, t3 = _cut(output_text(a))
    ob, t4 = _cut(output_text(b))
    return FlipItem(task=str(a["task"]), doc_id=int(a["doc_id"]), value_a=va, value_b=vb, input=inp, target=tgt,
                    output_a=oa, output_b=ob, truncated=t1 or t2 or t3 or t4)


def default_metric(samples: Iterable[Mapping[str, Any]]) -> str | None:
    """The first (sorted) per-sample metric other than calibration figures, or None."""
    names = sorted({m for s in samples for m in (s.get("metrics") or {}) if m not in SKIP_METRICS})
    return names[0] if names else None


def flipped_items(
    samples_a: Iterable[Mapping[str, Any]],
    samples_b: Iterable[Mapping[str, Any]],
    entry: str,
    metric: str | None = None,
    cap: int = CAP,
) -> Flips:
    """Flipped documents of ``entry`` on ``metric`` (default: :func:`default_metric`) from a to b.

    Samples of other entries are ignored; documents pair on ``(task, doc_id)``. Lists keep
    ``cap`` items per direction (by task, doc id; delta mode: by ``|Δ|``), counts are complete.
    """
    by_a = {(str(s["task"]), int(s["doc_id"])): s for s in samples_a if s.get("entry", entry) == entry}
    by_b = {(str(s["task"]), int(s["doc_id"])): s for s in samples_b if s.get("entry", entry) == entry}
    if metric is None:
        metric = default_metric(list(by_a.values()) + list(by_b.values())) or ""
    keys = sorted(set(by_a) & set(by_b))
    raw = [((by_a[k].get("metrics") or {}).get(metric), (by_b[k].get("metrics") or {}).get(metric)) for k in keys]
    clustered = any(isinstance(v, (list, tuple)) for pair in raw for v in pair)

    def value(v: Any) -> float | None:
        if clustered:
            items = cluster_items(v)
            return None if items is None else float(all(x == 1.0 for x in items))
        return per_sample_value(v)

    pairs = [(k, va, vb) for k, (ra, rb) in zip(keys, raw) if (va := value(ra)) is not None and (vb := value(rb)) is not None]
    binary = clustered or not pairs or is_binary([v for _, va, vb in pairs for v in (va, vb)])
    mode = MODE_CLUSTER if clustered else (MODE_BINARY if binary else MODE_DELTA)
    out = Flips(entry=entry, metric=metric, mode=mode, n_paired=len(pairs), cap=cap)
    if binary:
        r2w = [(k, va, vb) for k, va, vb in pairs if va == 1.0 and vb == 0.0]
        w2r = [(k, va, vb) for k, va, vb in pairs if va == 0.0 and vb == 1.0]
        out.n_right_to_wrong, out.n_wrong_to_right = len(r2w), len(w2r)
        out.right_to_wrong = [_item(by_a[k], by_b[k], va, vb) for k, va, vb in r2w[:cap]]
        out.wrong_to_right = [_item(by_a[k], by_b[k], va, vb) for k, va, vb in w2r[:cap]]
    else:
        changed = [(k, va, vb) for k, va, vb in pairs if va != vb]
        out.n_up = sum(1 for _, va, vb in changed if vb > va)
        out.n_down = len(changed) - out.n_up
        top = sorted(changed, key=lambda p: (-abs(p[2] - p[1]), p[0]))[:cap]
        out.largest_delta = [_item(by_a[k], by_b[k], va, vb) for k, va, vb in top]
    return out

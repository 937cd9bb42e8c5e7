"""The ``judge`` engine: the run's model against a baseline, scored by a pairwise judge.

A suite entry::

    - name: winrate
      engine: judge
      task: winrate
      data_files: {prompts: prompts.jsonl}   # rows {"prompt": ..., "baseline": ..., "reference": ...}
      judge: smollm2-135m                    # any evalkit model string (default smollm2-135m)
      baseline: smollm2-135m                 # generates the baseline where a row has none
      limit: 8
      gen_kwargs: {max_gen_toks: 128}

Freezing validates the prompts file (file:line errors) and hashes everything that decides the
number: judge and baseline model strings, judge prompt version, tie policy, limit, generation
settings, seed and the file's sha256. Running generates the model's greedy responses
(:func:`evalkit.models.generate.generate_greedy`: chat template, left-padded batches, stop at
eos), takes or generates the baseline's (a handle on the run model's device and dtype), and
calls :func:`evalkit.judge.winrate.win_rate` with the run store, so judgments are cached by
content.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from evalkit.engines.base import FrozenEntry, ModelHandle, RunContext, register_engine
from evalkit.errors import EvalkitError
from evalkit.models.generate import generate_greedy  # the one greedy loop (model layer); tests patch it here
from evalkit.suite.config import SuiteEntry

TASKS = ("winrate",)
DEFAULT_JUDGE = "smollm2-135m"
DEFAULT_MAX_GEN_TOKS = 256
TIE_POLICY = "tie"
BOOTSTRAP_ITERS = 2000
_GEN_KWARGS = ("max_gen_toks",)
_UNSUPPORTED = ("num_fewshot", "data", "fewshot_as_multiturn", "system_instruction", "samples", "temperature",
                "top_p", "ks")


def _prompts_path(entry: SuiteEntry, suite_dir: str) -> str:
    files = dict(entry.data_files or {})
    if set(files) != {"prompts"}:
        raise EvalkitError("judge engine: data_files must be exactly {prompts: <file.jsonl>}"
                           + (f" (got {', '.join(sorted(files))})" if files else ""))
    path = files["prompts"]
    return path if os.path.isabs(path) or not suite_dir else os.path.join(suite_dir, path)


def read_prompt_rows(path: str) -> list[dict[str, Any]]:
    """Rows ``{"prompt": str, "baseline"?: str, "reference"?: str}``; any bad row raises with file:line."""
    from evalkit.data.validate import iter_jsonl, require_file

    require_file(path, "prompts")
    rows: list[dict[str, Any]] = []
    for lineno, row in iter_jsonl(path, ("prompt",)):
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise EvalkitError(f"data {path}:{lineno}: 'prompt' must be a non-empty string")
        for key in ("baseline", "reference"):
            if row.get(key) is not None and not isinstance(row[key], str):
                raise EvalkitError(f"data {path}:{lineno}: '{key}' must be a string")
        rows.append({"prompt": row["prompt"], "baseline": row.get("baseline"), "reference": row.get("reference"),
                     "line": lineno})
    if not rows:
        raise EvalkitError(f"data {path}: no prompts")
    return rows


def judge_config(entry: SuiteEntry, rows: list[dict[str, Any]], limit: int | None) -> dict[str, Any]:
    """The canonical (hashed) config; also what :meth:`JudgeEngine.run` uses."""
    from evalkit.judge.prompt import PROMPT_VERSION

    for key in _UNSUPPORTED:
        if getattr(entry, key) is not None:
            raise EvalkitError(f"'{key}' is not used by the judge engine; remove it")
    gen = dict(entry.gen_kwargs or {})
    unknown = sorted(set(gen) - set(_GEN_KWARGS))
    if unknown:
        raise EvalkitError(f"gen_kwargs {unknown}: not supported by the judge engine (allowed: {', '.join(_GEN_KWARGS)})")
    max_gen = gen.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)
    if not isinstance(max_gen, int) or isinstance(max_gen, bool) or max_gen < 1:
        raise EvalkitError(f"gen_kwargs.max_gen_toks must be a positive whole number, got {max_gen!r}")
    used = rows[:limit] if limit is not None else rows
    missing = [r["line"] for r in used if r["baseline"] is None]
    if missing and not entry.baseline:
        raise EvalkitError(f"row(s) at line(s) {', '.join(map(str, missing[:5]))} have no 'baseline' and the entry "
                           "names no 'baseline' model to generate one")
    from evalkit.models.spec import parse_model

    for what, model in (("judge", entry.judge or DEFAULT_JUDGE), ("baseline", entry.baseline)):
        if model:
            try:
                parse_model(model)
            except EvalkitError as exc:
                raise EvalkitError(f"{what}: {exc}") from exc
    return {
        "task": entry.task,
        "judge": entry.judge or DEFAULT_JUDGE,
        "baseline": entry.baseline,
        "baseline_generated": len(missing),
        "prompt_version": PROMPT_VERSION,
        "tie_policy": TIE_POLICY,
        "allow_tie": False,
        "limit": limit,
        "num_prompts": len(used),
        "max_gen_toks": int(max_gen),
        "greedy": True,
        "chat_template": True,
        "seed": int(entry.seed),
        "bootstrap_iters": BOOTSTRAP_ITERS,
    }


class JudgeEngine:
    name = "judge"

    def freeze(self, entry: SuiteEntry, data_dir: str | None, suite_dir: str, limit: int | None) -> FrozenEntry:
        from evalkit.data.validate import sha256_file

        if entry.task not in TASKS:
            raise EvalkitError(f"judge engine: unknown task '{entry.task}' (known: {', '.join(TASKS)})")
        path = _prompts_path(entry, suite_dir)
        rows = read_prompt_rows(path)
        config = judge_config(entry, rows, limit)
        config["prompts_sha256"] = sha256_file(path)
        note = f"{config['num_prompts']}/{len(rows)} prompts" if config["num_prompts"] < len(rows) else ""
        return FrozenEntry(entry=entry, limit=limit, configs={entry.task: {**config, "path": path}},
                           canonical={entry.task: config}, files={path: config["prompts_sha256"]}, source="local",
                           note=note)

    def run(self, frozen: FrozenEntry, model: ModelHandle, ctx: RunContext) -> None:
        from evalkit.judge import base as judge_base
        from evalkit.judge.engine import Pair, judge_pairs
        from evalkit.judge.winrate import win_rate

        entry = frozen.entry
        cfg = frozen.configs[entry.task]
        canonical = frozen.canonical[entry.task]
        ctx.store.start_entry(ctx.run_id, entry.name, {"entry": asdict(entry), "limit": frozen.limit, "config": canonical})
        rows = read_prompt_rows(cfg["path"])
        rows = rows[: cfg["limit"]] if cfg["limit"] is not None else rows
        prompts = [r["prompt"] for r in rows]
        batch_size = entry.batch_size or ctx.batch_size
        loaded = model.hf
        responses = generate_greedy(loaded.model, loaded.tokenizer, prompts, max_new_tokens=cfg["max_gen_toks"],
                                    batch_size=batch_size)
        baselines = [r["baseline"] for r in rows]
        need = [i for i, b in enumerate(baselines) if b is None]
        if need:
            base_model = self._baseline_model(cfg["baseline"], model)
            generated = generate_greedy(base_model.model, base_model.tokenizer, [prompts[i] for i in need],
                                        max_new_tokens=cfg["max_gen_toks"], batch_size=batch_size)
            for i, text in zip(need, generated):
                baselines[i] = text
        references = [r["reference"] for r in rows]
        refs = references if any(r is not None for r in references) else None
        judge = judge_base.load_judge(cfg["judge"], dtype=model.dtype, device=model.device, batch_size=batch_size)
        result = win_rate(judge, prompts, responses, baselines, references=refs, store=ctx.store,
                          tie_policy=cfg["tie_policy"], allow_tie=cfg["allow_tie"], seed=cfg["seed"],
                          bootstrap_iters=cfg["bootstrap_iters"], batch_size=batch_size, dtype=model.dtype,
                          device=model.device)
        # both-order verdicts: the same pairs again, all answered from the judgment cache win_rate just filled
        verdicts = judge_pairs(judge, [Pair(p, m, b, refs[i] if refs is not None else None)
                                       for i, (p, m, b) in enumerate(zip(prompts, responses, baselines))],
                               store=ctx.store, allow_tie=cfg["allow_tie"], tie_policy=cfg["tie_policy"])
        side = {"a": "model", "b": "baseline", "tie": "tie", None: None}
        samples = []
        for i, (row, item, v) in enumerate(zip(rows, result["items"], verdicts)):
            win = {"model": 1.0, "tie": 0.5, "baseline": 0.0}[item["winner"]]
            samples.append({
                "task": entry.name, "doc_id": i, "prompt": row["prompt"], "target": baselines[i],
                "responses": [responses[i]],
                "metrics": {"win": win, "p_model": item["p_model"], "p_baseline": item["p_baseline"],
                            "p_tie": item["p_tie"]},
                "doc": {"prompt": row["prompt"], "baseline": row["baseline"], "reference": row["reference"],
                        "line": row["line"]},
                "extra": {"winner": item["winner"], "order_ab": side[v.order_ab], "order_ba": side[v.order_ba],
                          "consistent": v.consistent, "parse_failures": v.parse_failures,
                          "baseline_source": "generated" if i in need else "file"},
            })
        n = result["n"]
        wins = [s["metrics"]["win"] for s in samples]
        wr = result["win_rate"]
        stderr = (sum((w - wr) ** 2 for w in wins) / (n - 1) / n) ** 0.5 if n > 1 else None
        lo, hi = (result["ci"] + [None, None])[:2]
        metrics = [
            {"task": entry.name, "metric": "win_rate", "value": wr, "stderr": stderr, "n": n},
            {"task": entry.name, "metric": "win_rate_ci_lo", "value": lo, "stderr": None, "n": n},
            {"task": entry.name, "metric": "win_rate_ci_hi", "value": hi, "stderr": None, "n": n},
            {"task": entry.name, "metric": "tie_rate", "value": result["ties"] / n, "stderr": None, "n": n},
        ]
        extra = {k: result.get(k) for k in ("id", "judge", "judge_identity", "scoring", "prompt_version", "tie_policy",
                                            "wins", "losses", "ties", "position_consistency", "n_consistency",
                                            "parse_failures", "timings")}
        extra["judge_run_id"] = extra.pop("id")
        extra["baseline"] = cfg["baseline"]
        extra["baseline_generated"] = len(need)
        ctx.store.complete_entry(ctx.run_id, entry.name, samples, metrics, extra)

    @staticmethod
    def _baseline_model(baseline: str | None, model: ModelHandle) -> Any:
        """The baseline's loaded model, on the run model's device and dtype (its handle decided them)."""
        from evalkit.models.handle import get_model
        from evalkit.models.spec import parse_model

        if not baseline:
            raise EvalkitError("judge engine: rows without 'baseline' and no baseline model")
        spec = parse_model(baseline)
        if spec == model.spec:  # the run's own model: reuse the loaded copy
            return model.hf
        return get_model(spec, device=model.device, dtype=model.dtype).hf


ENGINE = register_engine(JudgeEngine())

"""The ``lm-eval`` engine: any lm-eval task, its prompts, filters and metrics untouched.

Freezing resolves the entry's task name to leaf tasks (MMLU -> subjects), points each at local
files when a mirror is given, and applies the entry's few-shot / generation settings inside the
task config itself, so the hashed config is exactly what runs. Running hands lm-eval a
:class:`PersistentLM` (resumable) and turns its logged samples into store rows.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from evalkit.data import mirror
from evalkit.engines.base import FrozenEntry, ModelHandle, RunContext, register_engine
from evalkit.engines.lmeval import tasks as lmtasks
from evalkit.errors import EvalkitError
from evalkit.suite.config import SuiteEntry


def _resolve_data(entry: SuiteEntry, names: list[str], data_dir: str | None, suite_dir: str) -> mirror.ResolvedData:
    if entry.data_files:
        return mirror.explicit_files(entry.data_files, names, suite_dir)
    adapter = mirror.adapter_for(entry.task, entry.data)
    if adapter and data_dir:
        return mirror.ADAPTERS[adapter](data_dir, names)
    return mirror.ResolvedData(tasks={n: {} for n in names}, source="hub")


class LmEvalEngine:
    name = "lm-eval"

    def freeze(self, entry: SuiteEntry, data_dir: str | None, suite_dir: str, limit: int | None) -> FrozenEntry:
        names = lmtasks.leaf_tasks(entry.task)
        data = _resolve_data(entry, names, data_dir, suite_dir)
        configs: dict[str, dict[str, Any]] = {}
        for name, overrides in data.tasks.items():
            cfg = lmtasks.apply_overrides(lmtasks.base_config(name), overrides)
            if entry.num_fewshot is not None:
                cfg["num_fewshot"] = entry.num_fewshot
            if entry.gen_kwargs:
                cfg["generation_kwargs"] = {**(cfg.get("generation_kwargs") or {}), **entry.gen_kwargs}
            if entry.samples:
                from evalkit.engines.lmeval.sampling import configure_sampling

                cfg = configure_sampling(cfg, entry)
            configs[name] = cfg
        canonical = {name: lmtasks.canonical(cfg) for name, cfg in sorted(configs.items())}
        split = None
        if entry.confirm_fraction is not None:
            from evalkit.suite.split import check_sizes, eval_rows, split_ids

            split = {}
            for name, cfg in sorted(configs.items()):
                rows = eval_rows(cfg)
                split[name] = split_ids(rows[:limit] if limit is not None else rows, entry.confirm_fraction)
            check_sizes(entry.name, {p: [i for s in split.values() for i in s[p]] for p in ("select", "confirm")})
        return FrozenEntry(entry=entry, limit=limit, configs=configs, canonical=canonical, files=data.files,
                           source=data.source, note=data.note, split=split)

    def run(self, frozen: FrozenEntry, model: ModelHandle, ctx: RunContext) -> None:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager

        from evalkit.engines.lmeval.persistent import PersistentLM
        from evalkit.engines.lmeval.determinism import seeded_langdetect
        from evalkit.engines.lmeval.progress import EntryProgress, quiet_request_building
        from evalkit.engines.lmeval.results import metric_rows, sample_rows

        entry = frozen.entry
        ctx.store.start_entry(ctx.run_id, entry.name, {"entry": asdict(entry), "limit": frozen.limit,
                                                        "part": ctx.part if frozen.split else "all"})
        bar = EntryProgress(entry.name, ctx.progress)
        wrapped = PersistentLM(model.lmeval, ctx.store, ctx.run_id, entry.name, progress=ctx.progress, bar=bar)
        chat = entry.apply_chat_template
        # a split entry run for confirmation evaluates exactly its confirmation half (lm-eval's
        # `samples` keeps the original doc ids, so items pair with a full run of the same suite)
        only = ({t: ids["confirm"] for t, ids in frozen.split.items()}
                if ctx.part == "confirm" and frozen.split else None)
        try:
            with quiet_request_building(), seeded_langdetect():
                out = simple_evaluate(
                    model=wrapped,
                    tasks=list(frozen.configs.values()),
                    limit=None if only else frozen.limit,
                    samples=only,
                    log_samples=True,
                    apply_chat_template=chat,
                    fewshot_as_multiturn=entry.fewshot_as_multiturn if entry.fewshot_as_multiturn is not None else chat,
                    system_instruction=entry.system_instruction,
                    random_seed=entry.seed,
                    numpy_random_seed=entry.seed,
                    torch_random_seed=entry.seed,
                    fewshot_random_seed=entry.seed,
                    bootstrap_iters=0,
                    task_manager=TaskManager(include_defaults=False),
                )
        except FileNotFoundError as exc:
            raise EvalkitError(f"entry '{entry.name}': data file not found ({exc})") from exc
        except ConnectionError as exc:
            raise EvalkitError(f"entry '{entry.name}': dataset not reachable offline ({exc})") from exc
        finally:
            bar.close()
        samples_by_task = {}
        for task, records in (out or {}).get("samples", {}).items():
            output_type = frozen.configs.get(task, {}).get("output_type", "generate_until")
            samples_by_task[task] = sample_rows(task, records, output_type)
        metrics, extra = metric_rows(entry.name, out["results"], samples_by_task, entry.calibration)
        if entry.samples:
            from evalkit.engines.lmeval.sampling import sampling_metrics

            metrics.extend(sampling_metrics(entry, frozen.configs, samples_by_task))
        extra["n_shot"] = out.get("n-shot", {})
        extra["computed_requests"] = wrapped.computed
        extra["reused_requests"] = wrapped.reused
        extra["commits"] = wrapped.commits
        extra["commit_s"] = round(wrapped.commit_seconds, 4)
        samples = [s for ss in samples_by_task.values() for s in ss]
        ctx.store.complete_entry(ctx.run_id, entry.name, samples, metrics, extra)


ENGINE = register_engine(LmEvalEngine())

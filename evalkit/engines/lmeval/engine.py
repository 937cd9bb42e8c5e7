"""The ``lm-eval`` engine: any lm-eval task, its prompts, filters and metrics untouched.

Freezing resolves the entry's task name to leaf tasks (MMLU -> subjects), points each at local
files when a mirror is given, and applies the entry's few-shot / generation settings inside the
task config itself, so the hashed config is exactly what runs. Running hands lm-eval a
:class:`PersistentLM` (resumable) and turns its logged samples into store rows.

Tasks from the user's own folders (``include_path``) resolve the same way; a local
``dataset_kwargs.data_files`` in such a task's YAML is read relative to that YAML's folder and
hashed like any data file, so the task runs offline.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from evalkit.data import mirror
from evalkit.data.validate import require_file, sha256_file
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


_LOCAL_FORMATS = ("json", "csv", "parquet", "text", "arrow")


def _user_task_data(name: str, include: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, str]] | None:
    """A task from the user's folders that reads local files (``dataset_path: json`` + ``data_files``):
    its data_files made absolute (relative paths are relative to the task's YAML) and their sha256.
    None for any other task (it reads the hub unless a mirror or the entry's data_files serve it)."""
    yaml_path = lmtasks.task_file(name, include)
    if not include or not yaml_path:
        return None
    yaml_path = os.path.abspath(yaml_path)
    if not any(yaml_path.startswith(os.path.join(os.path.abspath(f), "")) for f in include):
        return None
    cfg = lmtasks.base_config(name, include)
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    data_files = kwargs.get("data_files")
    if cfg.get("dataset_path") not in _LOCAL_FORMATS or not data_files:
        return None
    base = os.path.dirname(yaml_path)
    files: dict[str, str] = {}

    def local(path: Any) -> str:
        full = os.path.expanduser(str(path))
        if not os.path.isabs(full):
            full = os.path.join(base, full)
        require_file(full, f"task '{name}' data")
        files[full] = sha256_file(full)
        return full

    def each(value: Any) -> Any:
        return [local(v) for v in value] if isinstance(value, (list, tuple)) else local(value)

    kwargs["data_files"] = ({split: each(v) for split, v in data_files.items()} if isinstance(data_files, dict)
                            else each(data_files))
    return {"dataset_kwargs": kwargs}, files


def _local_user_tasks(data: mirror.ResolvedData, include: tuple[str, ...]) -> mirror.ResolvedData:
    """``data`` with the user's own local-file tasks pointed at their files (local when all are)."""
    if data.source != "hub" or not include:
        return data
    tasks, files, all_local = {}, dict(data.files), True
    for name, overrides in data.tasks.items():
        found = _user_task_data(name, include)
        if found is None:
            all_local = False
            tasks[name] = overrides
        else:
            tasks[name] = {**overrides, **found[0]}
            files.update(found[1])
    return mirror.ResolvedData(tasks=tasks, files=files, source="local" if all_local else "hub", note=data.note)


class LmEvalEngine:
    name = "lm-eval"

    def freeze(self, entry: SuiteEntry, data_dir: str | None, suite_dir: str, limit: int | None) -> FrozenEntry:
        # the suite's freeze made these absolute (entry's own, suite-level and --include-path folders)
        include = tuple(os.path.join(suite_dir, p) for p in (entry.include_path or ()))
        names = lmtasks.leaf_tasks(entry.task, include)
        data = _local_user_tasks(_resolve_data(entry, names, data_dir, suite_dir), include)
        configs: dict[str, dict[str, Any]] = {}
        for name, overrides in data.tasks.items():
            cfg = lmtasks.apply_overrides(lmtasks.base_config(name, include), overrides)
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

"""The heavy parts of a round, behind one swappable table: evaluation, the suite hash and split,
the LM used for sampling, the model folder, KL, training, merging, the judge, the embedder and
the clustering.

Why a table: the fast tests replace these with fakes and still run every step, the store and
the resume logic for real. The real implementations reach evalkit only through its public
pieces (:mod:`evalkit.api` for evaluation, models and KL; the store, analysis and judge
modules), never through the runner, an engine or the model loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evalkit.errors import EvalkitError
from trainloop.config import LoopConfig


def _eval(cfg: LoopConfig, model: str, store: Any, part: str = "all") -> dict[str, Any]:
    from evalkit import api

    res = api.evaluate(api.EvalSettings(model=model, suite=cfg.suite, data_dir=cfg.data_dir, limit=cfg.limit,
                                        batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype,
                                        part=part), store)  # same identity: reused
    return {"run_id": res.run_id, "suite_hash": res.suite_hash, "reused": res.reused, "part": part}


def _split(cfg: LoopConfig) -> dict[str, Any]:
    from trainloop.gate.confirm import frozen_split

    return frozen_split(cfg)


def _suite_hash(cfg: LoopConfig) -> str:
    from evalkit import api

    return api.freeze_suite(cfg.suite, cfg.data_dir, cfg.limit).suite_hash


def _lm(cfg: LoopConfig, model: str) -> Any:
    from evalkit import api

    # sampling always goes through evalkit's FastLM (continuous batching, see trainloop.strategies.sample),
    # whatever lm-eval scheduler EVALKIT_LM_BACKEND picks for evaluation
    return api.get_model(model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size, backend="fast").lmeval


def _model_dir(model: str) -> str:
    from evalkit import api

    w = api.get_model(model).weights
    if w.adapter:
        raise EvalkitError(f"loop: the current model '{model}' is an adapter; train on a merged model")
    return w.source


def _kl(cfg: LoopConfig, policy: str, ref: str, prompts: list[str], store: Any) -> dict[str, Any]:
    from evalkit import api
    from evalkit.store.analyses import save_kl

    res = api.measure_kl(policy, ref, prompts, max_new_tokens=cfg.kl_max_new_tokens, seed=cfg.seed, device=cfg.device)
    kid = save_kl(store, **res.store_fields())
    return {"kl_id": kid, "mean_kl": res.mean_kl, "k1": res.k1, "k3": res.k3, "kl_stderr": res.kl_stderr,
            "n_tokens": res.n_tokens, "method": res.method}


def _train(model_dir: str, sft: list, dpo: list, out_dir: str, cfg: Any, grpo: list) -> dict[str, Any]:
    from trainloop.training.launch import train_launched

    return train_launched(model_dir, sft, dpo, out_dir, cfg, grpo).to_dict()


def _merge(base_dir: str, adapter_dir: str, out_dir: str) -> str:
    from trainloop.training.train import merge_adapter

    return merge_adapter(base_dir, adapter_dir, out_dir)


def _judge(model: str) -> Any:
    from evalkit.judge.base import load_judge

    return load_judge(model)


def _embed() -> Callable[..., Any]:
    from evalkit.analysis.clusters.embed import minilm_embed

    return minilm_embed


def _cluster(store: Any, run_id: str, targets: list[str], seed: int, exclude: Any = None) -> Any:
    from evalkit.analysis.clusters import cluster_run

    return cluster_run(store, run_id, tasks=targets, seed=seed, exclude=exclude)


@dataclass
class Backends:
    eval: Callable[[LoopConfig, str, Any], dict[str, Any]] = _eval
    suite_hash: Callable[[LoopConfig], str] = _suite_hash
    lm: Callable[[LoopConfig, str], Any] = _lm
    model_dir: Callable[[str], str] = _model_dir
    kl: Callable[[LoopConfig, str, str, list[str], Any], dict[str, Any]] = _kl
    train: Callable[..., dict[str, Any]] = _train
    merge: Callable[[str, str, str], str] = _merge
    embed: Callable[[], Callable[..., Any] | None] = _embed
    cluster: Callable[[Any, str, list[str], int], Any] = _cluster
    judge: Callable[[str], Any] = _judge
    split: Callable[[LoopConfig], dict[str, Any]] = _split  # entry -> {"select"/"confirm": [[task, doc_id]]}

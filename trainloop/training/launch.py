"""Training on several GPUs: the round's training as a job file run under ``accelerate launch``.

Why a job file and a subprocess: TRL trains on several GPUs by being started once per GPU
(``accelerate launch --multi_gpu --num_processes N``), each process running the same script.
The loop lives in one long-lived process that holds the store, so the training step writes
what the trainers need (base model folder, data, :class:`~trainloop.training.train.TrainConfig`) to a
JSON job, launches ``python -m trainloop.training.launch <job>`` under accelerate, and reads back the
result the main process wrote. With one process the same job runs in-process
(:func:`run_job`), which is what the CPU tests exercise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from evalkit.errors import EvalkitError
from trainloop.training.train import TrainConfig, TrainResult, train_round


def write_job(path: str, model_dir: str, sft: Sequence[dict[str, Any]], dpo: Sequence[dict[str, Any]], out_dir: str,
              cfg: TrainConfig, grpo: Sequence[dict[str, Any]] = ()) -> str:
    job = {"model_dir": model_dir, "sft": list(sft), "dpo": list(dpo), "grpo": list(grpo), "out_dir": out_dir,
           "config": asdict(cfg), "result": path + ".result.json"}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(job, fh)
    return path


def run_job(path: str) -> TrainResult:
    """Run a job (in every launched process); the main process writes the result file."""
    with open(path, encoding="utf-8") as fh:
        job = json.load(fh)
    c = dict(job["config"])
    if isinstance(c.get("target_modules"), list):
        c["target_modules"] = tuple(c["target_modules"])
    res = train_round(job["model_dir"], job["sft"], job["dpo"], job["out_dir"], TrainConfig(**c), job["grpo"])
    if int(os.environ.get("RANK", "0")) == 0:
        with open(job["result"], "w", encoding="utf-8") as fh:
            json.dump(res.to_dict(), fh)
    return res


def launch_command(job_path: str, cfg: TrainConfig) -> list[str]:
    """``accelerate launch`` for ``cfg.num_processes`` GPUs on this machine (TRL's documented route)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1",
           "--num_processes", str(cfg.num_processes), "--mixed_precision", "bf16" if cfg.bf16 is not False else "no"]
    if cfg.num_processes > 1:
        cmd.append("--multi_gpu")
    return cmd + ["-m", "trainloop.training.launch", job_path]


def train_launched(model_dir: str, sft: Sequence[dict[str, Any]], dpo: Sequence[dict[str, Any]], out_dir: str,
                   cfg: TrainConfig, grpo: Sequence[dict[str, Any]] = ()) -> TrainResult:
    """One process: in-process. Several: one per GPU under ``accelerate launch``."""
    if cfg.num_processes <= 1:
        return train_round(model_dir, sft, dpo, out_dir, cfg, grpo)
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < cfg.num_processes:
        raise EvalkitError(f"train: num_processes {cfg.num_processes} needs that many CUDA GPUs; this machine has {have}")
    job = write_job(os.path.join(out_dir + ".job", "job.json"), model_dir, sft, dpo, out_dir, cfg, grpo)
    proc = subprocess.run(launch_command(job, cfg), check=False)
    if proc.returncode != 0:
        raise EvalkitError(f"train: accelerate launch exited with status {proc.returncode} (job {job})")
    with open(job + ".result.json", encoding="utf-8") as fh:
        return TrainResult(**json.load(fh))


if __name__ == "__main__":  # python -m trainloop.training.launch <job.json>, started by accelerate launch
    run_job(sys.argv[1])

"""One training round with TRL + PEFT LoRA: SFT, DPO, SFT then DPO, or GRPO with a verifier reward.

Why these choices:
- **Completion-only loss without template surgery.** SmolLM2's chat template has no
  ``{% generation %}`` markers, so TRL's ``assistant_only_loss`` cannot find the assistant span.
  The SFT data is therefore given in TRL's conversational *prompt-completion* form, for which
  ``SFTTrainer`` masks the prompt itself (``completion_only_loss``): same effect, any template.
- **DPO's reference is implicit.** With a LoRA policy TRL scores the reference by disabling the
  adapter, so no second model is held in memory (``ref_model=None``).
- **GRPO's reward is the eval's own checker** (IFEval: the fraction of a prompt's instructions
  followed), so the policy is optimised for exactly what the suite measures on *new* prompts.
  ~13 s per step on this CPU (4 completions x 64 tokens): a GPU method; ``vllm`` generation is
  TRL's ``use_vllm=True`` option there.
- **Hardware.** CPU: ``use_cpu``, no gradient checkpointing (TRL turns it on by default; on CPU it
  only costs time), bf16 autocast where the CPU has native bf16. GPU: bf16 when supported; several
  GPUs via ``accelerate launch`` (TRL/transformers read the distributed environment themselves).
- **The loss curve is kept** (every logged step) because the loop report shows it and because a
  flat curve is the first sign of the under-fitting seen in the first experiment here.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models.spec import ModelSpec

METHODS = ("sft", "dpo", "grpo", "sft+dpo")


@dataclass(frozen=True)
class TrainConfig:
    method: str = "sft"
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"
    learning_rate: float = 1e-3
    dpo_learning_rate: float = 2e-4
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs (tests, quick checks)
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    beta: float = 0.1
    grpo_learning_rate: float = 1e-5
    grpo_generations: int = 4  # completions per prompt (the group GRPO normalises rewards over)
    grpo_max_completion: int = 128
    grpo_beta: float = 0.02  # KL penalty to the reference (the adapter switched off)
    seed: int = 0
    bf16: bool | None = None  # None: where the hardware has fast bf16
    # GPU-only settings (documented TRL / accelerate options; nothing here has run on a GPU)
    num_processes: int = 1  # > 1: one process per GPU under `accelerate launch --multi_gpu` (trainloop.training.launch)
    use_vllm: bool = False  # GRPO generation through vLLM (TRL GRPOConfig.use_vllm)
    vllm_mode: str = "colocate"  # "colocate" (in the training process) or "server" (`trl vllm-serve`)
    vllm_server_base_url: str | None = None  # server mode: e.g. http://127.0.0.1:8000
    vllm_gpu_memory_utilization: float = 0.3  # colocate mode: the GPU share vLLM may take

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EvalkitError(f"training method '{self.method}' is not one of {', '.join(METHODS)}")


@dataclass
class TrainResult:
    method: str
    adapter_dir: str
    steps: int
    seconds: float
    examples: int
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sft_rows(examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``{"messages": [..., assistant]}`` -> TRL conversational prompt-completion rows; plain
    ``{"prompt": str, "completion": str}`` rows (few-shot tasks scored without a chat template,
    e.g. GSM8K) pass through. One round trains on one of the two forms."""
    rows = []
    for ex in examples:
        if "messages" not in ex and isinstance(ex.get("prompt"), str) and isinstance(ex.get("completion"), str):
            rows.append({"prompt": ex["prompt"], "completion": ex["completion"]})
            continue
        msgs = ex.get("messages")
        if not msgs or msgs[-1]["role"] != "assistant":
            raise EvalkitError("SFT example must be chat messages ending with an assistant turn, or a plain prompt/completion")
        rows.append({"prompt": msgs[:-1], "completion": [msgs[-1]]})
    if len({isinstance(r["prompt"], str) for r in rows}) > 1:
        raise EvalkitError("this round's SFT data mixes chat and plain-text examples (e.g. IFEval and GSM8K targets "
                           "together); TRL trains on one form at a time: target them in separate loops")
    return rows


def _use_bf16(cfg: TrainConfig, spec: ModelSpec) -> bool:
    """``cfg.bf16``, else: on a GPU where it supports bf16; on a CPU where evalkit's runtime would
    pick bf16 for ``auto`` (native bf16 instructions; emulated bf16 is slower than fp32)."""
    if cfg.bf16 is not None:
        return cfg.bf16
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    from evalkit import api

    return api.resolve_runtime(spec, device="cpu", dtype="auto", backend="fast").dtype == "bfloat16"


def _common_args(cfg: TrainConfig, out_dir: str, lr: float, bf16: bool) -> dict[str, Any]:
    import torch

    cpu = not torch.cuda.is_available()
    return {
        "output_dir": out_dir, "learning_rate": lr, "num_train_epochs": cfg.epochs, "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
        "logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": cfg.seed, "data_seed": cfg.seed,
        "use_cpu": cpu, "gradient_checkpointing": False, "bf16": bf16, "lr_scheduler_type": "cosine",
        "warmup_steps": 0, "dataloader_num_workers": 0, "max_length": cfg.max_length,
    }


def _lora(cfg: TrainConfig) -> Any:
    from peft import LoraConfig

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def _load(model_dir: str) -> Any:
    """The model to train, through an evalkit handle: fp32 master weights on the CPU (the trainer
    moves them to the GPU when there is one), the pad token set to EOS when the tokenizer has none."""
    from evalkit import api

    return api.get_model(model_dir, device="cpu", dtype="float32")


def _curve(log_history: list[dict[str, Any]], stage: str, offset: int) -> list[dict[str, float]]:
    keep = ("loss", "learning_rate", "grad_norm", "rewards/accuracies", "rewards/margins", "reward", "kl")
    return [{"stage": stage, "step": offset + int(h["step"]), **{k: float(h[k]) for k in keep if k in h}}
            for h in log_history if "loss" in h]


def verifier_reward(name: str) -> Any:
    """A TRL reward function for a named verifier (the dataset's ``doc`` column reaches it as a kwarg)."""
    if name == "gsm8k":
        from trainloop.strategies.self_gsm8k import final_answer

        def gsm8k_reward(prompts: list[Any], completions: list[Any], doc: list[str], **_: Any) -> list[float]:
            """1 when the completion's final number is the known answer (lm-eval's strict, then flexible reading)."""
            return [float(final_answer(c[-1]["content"] if isinstance(c, list) else str(c)) == json.loads(d)["answer"])
                    for c, d in zip(completions, doc)]

        return gsm8k_reward
    if name != "ifeval":
        raise EvalkitError(f"no GRPO verifier named '{name}' (available: ifeval, gsm8k)")
    from trainloop.data.ifeval import IfevalPrompt, check

    def ifeval_reward(prompts: list[Any], completions: list[Any], doc: list[str], **_: Any) -> list[float]:
        """Fraction of the prompt's instructions the completion follows (denser than all-or-nothing)."""
        out = []
        for comp, d in zip(completions, doc):
            text = comp[-1]["content"] if isinstance(comp, list) else str(comp)
            dd = json.loads(d)
            p = IfevalPrompt(str(dd["key"]), dd["prompt"], tuple(dd["instruction_id_list"]), tuple(dd["kwargs"]))
            verdict = check(p, text)
            out.append(sum(verdict) / len(verdict) if verdict else 0.0)
        return out

    return ifeval_reward


def grpo_vllm_args(cfg: TrainConfig) -> dict[str, Any]:
    """TRL's vLLM options for GRPO generation; vLLM needs a CUDA GPU, so ask for one clearly."""
    if not cfg.use_vllm:
        return {}
    import torch

    if not torch.cuda.is_available():
        raise EvalkitError("train: use_vllm (GRPO generation through vLLM) needs a CUDA GPU and none is visible")
    if cfg.vllm_mode not in ("colocate", "server"):
        raise EvalkitError(f"train: vllm_mode must be colocate or server (got '{cfg.vllm_mode}')")
    out: dict[str, Any] = {"use_vllm": True, "vllm_mode": cfg.vllm_mode}
    if cfg.vllm_mode == "colocate":
        out["vllm_gpu_memory_utilization"] = cfg.vllm_gpu_memory_utilization
    elif cfg.vllm_server_base_url:
        out["vllm_server_base_url"] = cfg.vllm_server_base_url
    return out


def train_round(model_dir: str, sft: Sequence[dict[str, Any]], dpo: Sequence[dict[str, Any]], out_dir: str,
                cfg: TrainConfig, grpo: Sequence[dict[str, Any]] = ()) -> TrainResult:
    """Train a LoRA adapter on ``model_dir`` and save it (with the tokenizer) to ``out_dir``.

    ``grpo`` rows are ``{"prompt": [messages], "verifier": name, "doc": {...}}``."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    stages = cfg.method.split("+")
    if "sft" in stages and not sft:
        raise EvalkitError("no SFT examples selected for this round")
    if "dpo" in stages and not dpo:
        raise EvalkitError("no DPO pairs selected for this round")
    if "grpo" in stages and not grpo:
        raise EvalkitError("no verifiable prompts selected for GRPO in this round")
    handle = _load(model_dir)
    model, tok = handle.hf.model, handle.hf.tokenizer
    bf16 = _use_bf16(cfg, handle.spec)
    t0 = time.perf_counter()
    curve: list[dict[str, float]] = []
    info: list[dict[str, Any]] = []
    steps = 0
    for stage in stages:
        stage_dir = os.path.join(out_dir, f"_{stage}")
        if stage == "sft":
            args = SFTConfig(**_common_args(cfg, stage_dir, cfg.learning_rate, bf16))
            data = Dataset.from_list(sft_rows(sft))
            trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                                 peft_config=None if _is_peft(model) else _lora(cfg))
        elif stage == "grpo":
            common = _common_args(cfg, stage_dir, cfg.grpo_learning_rate, bf16)
            common.pop("max_length")
            common["per_device_train_batch_size"] = cfg.grpo_generations  # one prompt's group per step
            args = GRPOConfig(**common, num_generations=cfg.grpo_generations, max_completion_length=cfg.grpo_max_completion,
                              beta=cfg.grpo_beta, **grpo_vllm_args(cfg))
            verifiers = {g["verifier"] for g in grpo}
            if len(verifiers) != 1:
                raise EvalkitError(f"GRPO rows name {len(verifiers)} verifiers; one round trains on one")
            data = Dataset.from_list([{"prompt": g["prompt"], "doc": json.dumps(g["doc"])} for g in grpo])
            trainer = GRPOTrainer(model=model, reward_funcs=verifier_reward(verifiers.pop()), args=args,
                                  train_dataset=data, processing_class=tok,
                                  peft_config=None if _is_peft(model) else _lora(cfg))
        else:
            args = DPOConfig(**_common_args(cfg, stage_dir, cfg.dpo_learning_rate, bf16), beta=cfg.beta)
            data = Dataset.from_list([{k: ex[k] for k in ("prompt", "chosen", "rejected")} for ex in dpo])
            trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data, processing_class=tok,
                                 peft_config=None if _is_peft(model) else _lora(cfg))
        out = trainer.train()
        curve += _curve(trainer.state.log_history, stage, steps)
        info.append({"stage": stage, "examples": len(data), "steps": int(trainer.state.global_step),
                     "train_loss": float(out.training_loss)})
        steps += int(trainer.state.global_step)
        model = trainer.model  # the PEFT model: a DPO stage continues the SFT adapter
    # only the trained adapter: TRL adds a frozen "ref" copy when DPO continues an SFT adapter;
    # under `accelerate launch` every process trains, the main one saves
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(out_dir, selected_adapters=["default"])
        tok.save_pretrained(out_dir)
        for stage in stages:
            shutil.rmtree(os.path.join(out_dir, f"_{stage}"), ignore_errors=True)
    return TrainResult(cfg.method, out_dir, steps, round(time.perf_counter() - t0, 2), len(sft) + len(dpo) + len(grpo),
                       curve, info)


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def merge_adapter(base_dir: str, adapter_dir: str, out_dir: str) -> str:
    """Base + adapter -> a plain transformers folder (the next round's base after a promotion).

    The handle merges the adapter into ``base_dir`` in fp32 (named explicitly rather than read from
    the adapter's config); the tokenizer saved is the adapter's, as trained."""
    from transformers import AutoTokenizer

    from evalkit import api

    spec = ModelSpec(raw=adapter_dir, kind="peft", path=base_dir, adapter=os.path.abspath(adapter_dir))
    api.get_model(spec, device="cpu", dtype="float32").hf.model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out_dir)
    return out_dir

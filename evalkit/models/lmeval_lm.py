"""Exposing evalkit models to lm-eval.

:func:`build_lm` turns a :class:`ModelSpec` into an lm-eval ``LM``: local and hub weights are
loaded once by :mod:`evalkit.models.loader` (dtype/thread policy, GGUF conversion, PEFT merge)
and handed to evalkit's :class:`~evalkit.models.fastlm.FastLM` (lm-eval's HF backend with a faster
scheduler: shared-prefix reuse, continuous batching), so prompts and scoring stay lm-eval's.
``openai:`` maps to lm-eval's ``local-completions``; ``vllm:`` to lm-eval's ``vllm`` backend
(GPU only). The ``evalkit`` name is also registered with lm-eval, so
``lm_eval --model evalkit --model_args model=smollm2-135m`` uses the same layer.
"""

from __future__ import annotations

from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models.hardware import cuda_available, resolve_dtype
from evalkit.models.loader import LoadedModel, load_causal_lm
from evalkit.models.spec import ModelSpec, parse_model


def openai_model_args(spec: ModelSpec, batch_size: int = 1) -> dict[str, Any]:
    """lm-eval ``local-completions`` arguments for an OpenAI-compatible server (vLLM serve, etc.)."""
    return {
        "model": spec.model_name,
        "base_url": f"{spec.base_url}/completions",
        "tokenizer_backend": None,
        "tokenized_requests": False,
        "num_concurrent": max(1, batch_size),
        "max_retries": 3,
    }


def vllm_model_args(spec: ModelSpec, dtype: str | None = "auto", tensor_parallel_size: int = 1) -> dict[str, Any]:
    """lm-eval ``vllm`` backend arguments (documented in lm-eval's vllm_causallms)."""
    return {
        "pretrained": spec.path,
        "dtype": resolve_dtype(dtype, "cuda"),
        "tensor_parallel_size": tensor_parallel_size,
        "gpu_memory_utilization": 0.85,
        "batch_size": "auto",
    }


def build_lm(
    spec: ModelSpec,
    *,
    loaded: LoadedModel | None = None,
    batch_size: int = 8,
    dtype: str | None = "auto",
    device: str | None = "auto",
    backend: str = "fast",
) -> Any:
    """An lm-eval LM for ``spec``. Local/hub weights get evalkit's :class:`FastLM` (``backend="fast"``,
    the default) or lm-eval's stock ``HFLM`` (``backend="hf"``, for comparisons and as an escape hatch)."""
    from lm_eval.api.registry import get_model

    if backend not in ("fast", "hf"):
        raise EvalkitError(f"unknown lm-eval backend '{backend}' (choose fast or hf)")

    if spec.kind == "openai":
        return get_model("local-completions").create_from_arg_obj(openai_model_args(spec, batch_size))
    if spec.kind == "vllm":
        if not cuda_available():
            raise EvalkitError(f"model '{spec.raw}': vLLM needs a CUDA GPU and none is visible on this machine")
        return get_model("vllm").create_from_arg_obj(vllm_model_args(spec, dtype))
    loaded = loaded or load_causal_lm(spec, dtype=dtype, device=device)
    from lm_eval.models.huggingface import HFLM

    from evalkit.models.fastlm import FastLM

    cls = FastLM if backend == "fast" else HFLM
    return cls(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size, max_batch_size=batch_size)


def _register() -> None:
    """Register ``evalkit`` as an lm-eval model name (visible once this module is imported)."""
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    @register_model("evalkit")
    class EvalkitLM(LM):  # a factory: lm-eval only ever calls the classmethods below
        """lm-eval entry point: ``--model evalkit --model_args model=<MODEL>[,backend=fast|hf][,dtype=...]``."""

        def loglikelihood(self, requests):  # pragma: no cover - never instantiated
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):  # pragma: no cover
            raise NotImplementedError

        def generate_until(self, requests):  # pragma: no cover
            raise NotImplementedError

        @classmethod
        def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> Any:
            from lm_eval.utils import simple_parse_args_string

            args = simple_parse_args_string(arg_string)
            return cls.create_from_arg_obj(args, additional_config)

        @classmethod
        def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> Any:
            extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
            bs = arg_dict.get("batch_size", extra.get("batch_size", 8))
            return build_lm(
                parse_model(str(arg_dict.get("model", "smollm2-135m"))),
                batch_size=int(bs) if str(bs).isdigit() else 8,
                dtype=arg_dict.get("dtype", "auto"),
                device=arg_dict.get("device", extra.get("device") or "auto"),
                backend=str(arg_dict.get("backend", "fast")),
            )


try:
    _register()
except ValueError:  # pragma: no cover - already registered (module reloaded)
    pass

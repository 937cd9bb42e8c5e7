"""evalkit's model layer registered as the inspect-ai model API ``evalkit``.

Why our own provider instead of inspect's ``hf/``: the run's model is already loaded once by
its :class:`~evalkit.models.handle.ModelHandle` (GGUF conversion, PEFT merge, device/dtype
decided once) and shared with the lm-eval engine; inspect's hf provider would load it again. This one reuses the loaded
transformers model and tokenizer, renders chat messages with the tokenizer's chat template,
honours ``GenerateConfig`` (temperature, top_p, max_tokens, seed, stop_seqs) and batches
concurrent requests (see :mod:`.batching`).

Seeding: each request's random stream is derived from (``config.seed``, the inspect epoch of
the calling sample, the rendered prompt), so a rerun with the same seed samples the same
completions, and the n epochs of one problem differ from each other. ``seed=None`` draws a
fresh seed per request (not reproducible). No temperature (or 0) means greedy decoding.

Use: ``get_model("evalkit/smollm2-135m")`` (or any evalkit MODEL string after ``evalkit/``;
``-M batch_size=16 -M dtype=float32`` are model args) or, inside evalkit,
:func:`inspect_model` on the run's :class:`~evalkit.engines.base.ModelHandle`. ``openai:``
specs map to inspect's OpenAI-compatible provider and ``vllm:`` specs to inspect's vllm
provider (CUDA only), because those servers already batch and sample on their own.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import TYPE_CHECKING, Any

import anyio
from inspect_ai.model import (
    ChatMessage,
    GenerateConfig,
    Model,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    get_model,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from evalkit.engines.inspect.batching import BatchedGenerator, GenParams
from evalkit.errors import EvalkitError
from evalkit.models.loader import LoadedModel

if TYPE_CHECKING:
    from evalkit.engines.base import ModelHandle
    from evalkit.models.spec import ModelSpec

DEFAULT_MAX_TOKENS = 512
_LOADED: dict[str, LoadedModel] = {}  # weights hash -> the loaded model (one per process)
_GENERATORS: dict[int, BatchedGenerator] = {}  # id(model) -> its only worker thread


def register_loaded(loaded: LoadedModel) -> str:
    """Make an already-loaded model available to ``get_model("evalkit/...", weights=key)``."""
    key = loaded.weights.weights_hash
    _LOADED[key] = loaded
    return key


def request_seed(seed: int | None, epoch: int | None, prompt: str) -> int:
    """The seed of one request's random stream (see the module docstring)."""
    if seed is None:
        return secrets.randbits(63)
    digest = hashlib.sha256(f"{seed}|{epoch}|{prompt}".encode()).hexdigest()
    return int(digest[:16], 16) % (2**63)


def _current_epoch() -> int | None:
    """The calling sample's epoch (inspect sets it in a context variable), if any."""
    try:
        from inspect_ai.solver._task_state import sample_state

        state = sample_state()
        return None if state is None else int(state.epoch)
    except Exception:  # outside an eval, or inspect moved it: callers still vary the seed per epoch
        return None


def _generator_for(loaded: LoadedModel, batch_size: int) -> BatchedGenerator:
    gen = _GENERATORS.get(id(loaded.model))
    if gen is None or gen.model is not loaded.model:
        gen = _GENERATORS[id(loaded.model)] = BatchedGenerator(loaded.model, loaded.tokenizer, batch_size)
    gen.batch_size = max(1, int(batch_size))
    return gen


def _load(model_name: str, dtype: str, device: str) -> LoadedModel:
    """The model for ``get_model("evalkit/<MODEL>")`` outside an evalkit run: a handle decides
    device and dtype, and its loaded model is shared per weights hash (one load per process)."""
    from evalkit.models.handle import get_model as get_handle
    from evalkit.models.spec import parse_model

    spec = parse_model(model_name)
    if spec.kind in ("openai", "vllm"):
        raise EvalkitError(f"model '{model_name}': {spec.kind} models are served; use inspect_model() "
                           "(openai-api/ or vllm/ providers), not evalkit/")
    handle = get_handle(spec, device=device, dtype=dtype)
    if handle.weights.weights_hash not in _LOADED:
        register_loaded(handle.hf)
    return _LOADED[handle.weights.weights_hash]


class EvalkitModelAPI(ModelAPI):
    """inspect-ai ModelAPI over an evalkit-loaded transformers model."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        weights: str | None = None,
        batch_size: int = 8,
        dtype: str = "auto",
        device: str = "auto",
        chat_template: bool = True,
        **model_args: Any,
    ) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        if model_args:
            raise EvalkitError(f"evalkit model API: unknown model args {sorted(model_args)}")
        loaded = _LOADED.get(weights) if weights else None
        self.loaded = loaded if loaded is not None else _load(model_name, dtype, device)
        self.batch_size = max(1, int(batch_size))
        self.use_chat_template = chat_template
        self.generator = _generator_for(self.loaded, self.batch_size)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        if tools:
            raise EvalkitError("evalkit model API: tool calling is not supported")
        prompt, templated = self.render(input)
        params = GenParams(
            max_new_tokens=int(config.max_tokens or DEFAULT_MAX_TOKENS),
            temperature=float(config.temperature or 0.0),
            top_p=float(config.top_p) if config.top_p is not None else 1.0,
            stop=tuple(config.stop_seqs or ()),
            add_special_tokens=not templated,
        )
        future = self.generator.submit(prompt, request_seed(config.seed, _current_epoch(), prompt), params)
        while not future.done():  # poll: works on any anyio backend, never blocks the loop
            await anyio.sleep(0.02)
        res = future.result()
        output = ModelOutput.from_content(model=self.model_name, content=res.text, stop_reason=res.stop_reason)  # type: ignore[arg-type]
        output.usage = ModelUsage(input_tokens=res.input_tokens, output_tokens=res.output_tokens,
                                  total_tokens=res.input_tokens + res.output_tokens)
        output.time = res.seconds
        return output

    def render(self, input: list[ChatMessage]) -> tuple[str, bool]:
        """The prompt text, and whether a chat template rendered it (then it holds its special tokens)."""
        messages = [{"role": m.role, "content": m.text} for m in input]
        tok = self.loaded.tokenizer
        if self.use_chat_template and getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
        if len(messages) == 1 and messages[0]["role"] == "user":
            return messages[0]["content"], False  # a base model: the text itself
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:", False

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def max_connections(self) -> int:
        """Twice the batch size: the next batch is already queued while one runs."""
        return 2 * self.batch_size

    def collapse_user_messages(self) -> bool:
        return True


@modelapi(name="evalkit")
def evalkit_api() -> type[ModelAPI]:
    return EvalkitModelAPI


def expect_requests(model: Model, n: int) -> None:
    """Tell an evalkit model that ``n`` generate calls are about to arrive together (see
    :meth:`.batching.BatchedGenerator.expect`); other providers batch on their own."""
    if isinstance(model.api, EvalkitModelAPI):
        model.api.generator.expect(n)


# ------------------------------------------------------------------ served models
def openai_model_args(spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    """inspect's OpenAI-compatible provider (``openai-api/<service>/<model>``) for ``openai:`` specs.

    The service name ``evalkit`` is only a label; the key comes from ``EVALKIT_API_KEY`` or
    ``OPENAI_API_KEY`` and defaults to ``EMPTY`` (local servers such as ``vllm serve`` ignore it).
    """
    key = os.environ.get("EVALKIT_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    return f"openai-api/evalkit/{spec.model_name}", {"base_url": spec.base_url, "api_key": key}


def vllm_model_args(spec: ModelSpec, dtype: str = "auto") -> tuple[str, dict[str, Any]]:
    """inspect's ``vllm/`` provider (it starts ``vllm serve``); refused without a CUDA GPU."""
    from evalkit.models.handle import resolve_runtime
    from evalkit.models.hardware import cuda_available

    if not cuda_available():
        raise EvalkitError(f"model '{spec.raw}': vLLM needs a CUDA GPU and none is visible on this machine")
    # a handle's dtype is already resolved (a no-op here); "auto" from a direct call resolves like a handle's
    # the model string's engine knobs (tensor_parallel_size, max_model_len, ...) become `vllm serve` server args
    return f"vllm/{spec.path}", {"dtype": resolve_runtime(spec, dtype=dtype).dtype, "gpu_memory_utilization": 0.85,
                                 **dict(spec.options)}


def _served(spec: ModelSpec, name: str, config: GenerateConfig, kwargs: dict[str, Any]) -> Model:
    from inspect_ai._util.error import PrerequisiteError

    try:
        return get_model(name, config=config, memoize=False, **kwargs)
    except PrerequisiteError as exc:  # e.g. the openai client package is not installed
        missing = "openai" if spec.kind == "openai" else "vllm"
        raise EvalkitError(f"model '{spec.raw}': inspect's {name.split('/')[0]} provider needs the "
                           f"'{missing}' package (pip install {missing})") from exc


def _display_name(spec: ModelSpec) -> str:
    """A name inspect accepts inside its cache folder (no '..' segments)."""
    if spec.kind in ("embedded", "hub"):
        return spec.raw
    return os.path.abspath(spec.adapter or spec.path or spec.raw).lstrip("/")


def inspect_model(handle: ModelHandle, *, batch_size: int | None = None, config: GenerateConfig | None = None) -> Model:
    """The run's model as an inspect ``Model``, reusing the weights the handle already loaded."""
    spec = handle.spec
    config = config or GenerateConfig()
    if spec.kind in ("openai", "vllm"):
        name, kwargs = openai_model_args(spec) if spec.kind == "openai" else vllm_model_args(spec, handle.dtype)
        return _served(spec, name, config, kwargs)
    key = register_loaded(handle.hf)
    return get_model(f"evalkit/{_display_name(spec)}", config=config, memoize=False, weights=key,
                     batch_size=int(batch_size or handle.batch_size))

"""Exposing evalkit models to lm-eval.

:func:`build_lm` turns a :class:`ModelSpec` into an lm-eval ``LM``: local and hub weights are
loaded once by :mod:`evalkit.models.loader` (dtype/thread policy, GGUF conversion, PEFT merge)
and handed to evalkit's :class:`~evalkit.models.fastlm.FastLM` (lm-eval's HF backend with a faster
scheduler: shared-prefix reuse, continuous batching), so prompts and scoring stay lm-eval's.
``openai:`` maps to lm-eval's ``local-completions`` (entries with ``apply_chat_template`` go to the
server's ``/chat/completions`` through lm-eval's ``local-chat-completions``; the server must be
reachable when the run starts, and failures are one :class:`EvalkitError` line); ``vllm:`` to
lm-eval's ``vllm`` backend (GPU only). The ``evalkit`` name is also registered with lm-eval, so
``lm_eval --model evalkit --model_args model=smollm2-135m`` uses the same layer.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models.hardware import cuda_available, resolve_dtype
from evalkit.models.loader import LoadedModel
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


def api_key() -> str:
    """The key sent to ``openai:`` servers: ``EVALKIT_API_KEY``, else ``OPENAI_API_KEY``, else ``EMPTY``
    (local servers such as ``vllm serve`` / ``transformers serve`` ignore it). Same rule as the judge."""
    return os.environ.get("EVALKIT_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"


def check_endpoint(spec: ModelSpec, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when nothing answers at ``spec.base_url``.

    One GET to the base URL: any HTTP reply (a 404 included: servers rarely serve ``/v1`` itself)
    proves a server is listening; a refused, unresolvable or silent address raises
    :class:`EvalkitError` instead of lm-eval's retries and an aiohttp traceback."""
    assert spec.base_url
    request = urllib.request.Request(spec.base_url, method="GET", headers={"Authorization": f"Bearer {api_key()}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EvalkitError(
            f"model '{spec.raw}': no OpenAI-compatible server answers at {spec.base_url} ({reason}); start one "
            "(e.g. `vllm serve <model>` or `transformers serve <model>`) or fix the URL in openai:<base_url>#<model>"
        ) from exc


class _ApiLog(logging.Filter):
    """Holds back lm-eval's per-retry API log lines during a call and keeps the last one, so a
    failure is reported once, with the server's own reply text, as an :class:`EvalkitError`."""

    def __init__(self) -> None:
        super().__init__()
        self.last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "Response text:" in msg or not self.last:
            self.last = msg
        return False


@contextlib.contextmanager
def _server_errors(raw: str, url: str) -> Iterator[None]:
    import asyncio

    logger = logging.getLogger("lm_eval.models.api_models")
    log = _ApiLog()
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addFilter(log)
    net_errors: tuple[type[BaseException], ...] = (ConnectionError, OSError, asyncio.TimeoutError)
    with contextlib.suppress(ImportError):
        import aiohttp

        net_errors += (aiohttp.ClientError,)
    with contextlib.suppress(ImportError):
        import requests

        net_errors += (requests.RequestException,)
    with contextlib.suppress(ImportError):
        import tenacity

        net_errors += (tenacity.RetryError,)
    try:
        yield
    except net_errors as exc:
        detail = log.last.split("Response text:", 1)[-1].strip().removesuffix("Retrying...").strip().rstrip(".")
        status = getattr(exc, "status", None) or getattr(getattr(exc, "response", None), "status_code", None)
        what = f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"
        if detail and "Response text:" in log.last:
            what += f": {detail[:200]}"
        raise EvalkitError(f"model '{raw}': request to {url} failed after retries ({what})") from exc
    finally:
        logger.removeFilter(log)
        logger.setLevel(level)


class ChatMessages(str):
    """A chat-templated request for an ``openai:`` server: the JSON list of messages, as a ``str``
    (stored as the sample's prompt) that :func:`_openai_lm_class`'s LM sends to ``/chat/completions``.
    lm-eval's own marker (``JsonChatStr``, a tuple) cannot be stored as a prompt."""


@functools.cache
def _openai_lm_class() -> type:
    """lm-eval's ``local-completions`` LM, extended for evalkit's ``openai:`` form (built lazily:
    importing lm-eval's API models pulls in aiohttp/tenacity)."""
    from lm_eval.api.registry import get_model
    from lm_eval.models.api_models import JsonChatStr

    LocalCompletionsAPI = get_model("local-completions")  # noqa: N806 - lm-eval's registered classes
    LocalChatCompletion = get_model("local-chat-completions")  # noqa: N806

    def _payload(payload: dict) -> dict:
        # an empty stop list means "no stop strings"; some servers (transformers serve) answer it with
        # HTTP 500, so it is left out, as the OpenAI API allows (IFEval's `until` is empty)
        if not payload.get("stop"):
            payload.pop("stop", None)
        return payload

    class OpenAIChat(LocalChatCompletion):
        @property
        def api_key(self) -> str:
            return api_key()

        def _create_payload(self, messages: Any, *args: Any, **kwargs: Any) -> dict:
            return _payload(super()._create_payload(messages, *args, **kwargs))

    class OpenAIServerLM(LocalCompletionsAPI):
        """Plain prompts go to ``/completions``. Chat-templated requests (``apply_chat_template``:
        lm-eval hands them over as JSON message lists, which ``/completions`` rejects) go to
        ``/chat/completions``, so the server applies its own chat template, as documented for
        lm-eval's ``local-chat-completions``. Log-likelihood requests need a tokenizer and prompt
        log-probabilities, which this form does not use: refused in one line."""

        def __init__(self, *, spec_raw: str, chat_url: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.spec_raw = spec_raw
            self.chat = OpenAIChat(base_url=chat_url, model=kwargs["model"], tokenizer_backend=None,
                                   tokenized_requests=False, num_concurrent=kwargs.get("num_concurrent", 1),
                                   max_retries=kwargs.get("max_retries", 3))

        @property
        def api_key(self) -> str:
            return api_key()

        def _create_payload(self, messages: Any, *args: Any, **kwargs: Any) -> dict:
            return _payload(super()._create_payload(messages, *args, **kwargs))

        def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            return ChatMessages(json.dumps(chat_history, ensure_ascii=False))

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            chat = [i for i, r in enumerate(requests) if isinstance(r.args[0], (ChatMessages, JsonChatStr))]
            chat_set = set(chat)
            plain = [i for i in range(len(requests)) if i not in chat_set]
            out: list[Any] = [None] * len(requests)
            if plain:
                with _server_errors(self.spec_raw, self.base_url):
                    texts = super().generate_until([requests[i] for i in plain], disable_tqdm=disable_tqdm)
                for i, text in zip(plain, texts, strict=True):
                    out[i] = text
            if chat:
                as_chat = []
                for i in chat:  # lm-eval's chat backend reads its messages from a JsonChatStr
                    req = copy.copy(requests[i])
                    first = req.args[0]
                    req.arguments = (first if isinstance(first, JsonChatStr) else JsonChatStr(str(first)), *req.args[1:])
                    as_chat.append(req)
                with _server_errors(self.spec_raw, self.chat.base_url):
                    texts = self.chat.generate_until(as_chat, disable_tqdm=disable_tqdm)
                for i, text in zip(chat, texts, strict=True):
                    out[i] = text
            return out

        def _refuse_loglikelihood(self, requests: list[Any]) -> EvalkitError:
            return EvalkitError(
                f"model '{self.spec_raw}': {len(requests)} log-likelihood requests (multiple-choice or perplexity "
                "tasks such as MMLU, ARC, PIQA) cannot run on an openai: endpoint (generation only); use a suite "
                "of generation entries (GSM8K, IFEval), or give the model's weights (folder or hub id) instead"
            )

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            if self.tokenizer is None:
                raise self._refuse_loglikelihood(requests)
            with _server_errors(self.spec_raw, self.base_url):  # pragma: no cover - needs a tokenizer
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
            if self.tokenizer is None:
                raise self._refuse_loglikelihood(requests)
            with _server_errors(self.spec_raw, self.base_url):  # pragma: no cover - needs a tokenizer
                return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    return OpenAIServerLM


def vllm_model_args(spec: ModelSpec, dtype: str | None = "auto", tensor_parallel_size: int = 1) -> dict[str, Any]:
    """lm-eval ``vllm`` backend arguments (documented in lm-eval's vllm_causallms); knobs given in the
    model string (``vllm:<model>,tensor_parallel_size=2,max_model_len=4096``) override the defaults."""
    return {
        "pretrained": spec.path,
        "dtype": resolve_dtype(dtype, "cuda"),
        "tensor_parallel_size": tensor_parallel_size,
        "gpu_memory_utilization": 0.85,
        "batch_size": "auto",
        **dict(spec.options),
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
        assert spec.base_url
        check_endpoint(spec)
        return _openai_lm_class()(spec_raw=spec.raw, chat_url=f"{spec.base_url}/chat/completions",
                                  **openai_model_args(spec, batch_size))
    if spec.kind == "vllm":
        if not cuda_available():
            raise EvalkitError(f"model '{spec.raw}': vLLM needs a CUDA GPU and none is visible on this machine")
        try:
            vllm_cls = get_model("vllm")
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] != "vllm":
                raise
            raise EvalkitError(f"model '{spec.raw}': the vllm package is not installed (pip install -e .[vllm])") from exc
        return vllm_cls.create_from_arg_obj(vllm_model_args(spec, dtype))
    if loaded is None:  # in-process weights are loaded by a handle (evalkit.models.handle), never here
        raise EvalkitError(f"model '{spec.raw}': build_lm needs the loaded model (get it from get_model(...).lmeval)")
    from lm_eval.models.huggingface import HFLM

    from evalkit.models.fastlm import FastLM

    cls = FastLM if backend == "fast" else HFLM
    return cls(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size, max_batch_size=batch_size)


def _register() -> None:
    """Register ``evalkit`` as an lm-eval model name (visible once this module is imported).

    ``lm_eval.models`` is imported first: it fills lm-eval's registry with lazy placeholders for the
    built-in names (``hf``, ``local-completions``, ``vllm``, ...), and ``get_model`` only does that
    itself while the registry is empty. Registering ``evalkit`` into an empty registry would leave
    ``evalkit`` as the only name lm-eval knows, so ``openai:``/``vllm:`` (and ``--model hf``) failed
    with "Supported model names: evalkit".
    """
    import lm_eval.models  # noqa: F401  (registers the built-in model names; cheap, they stay lazy)
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
            from evalkit.models.handle import get_model

            return get_model(
                str(arg_dict.get("model", "smollm2-135m")),
                batch_size=int(bs) if str(bs).isdigit() else 8,
                dtype=arg_dict.get("dtype", "auto"),
                device=arg_dict.get("device", extra.get("device") or "auto"),
                backend=str(arg_dict.get("backend", "fast")),
            ).lmeval


try:
    _register()
except ValueError:  # pragma: no cover - already registered (module reloaded)
    pass

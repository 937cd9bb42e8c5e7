"""Loading a :class:`ModelSpec` into transformers objects, once, for every engine.

Two steps, kept apart on purpose:
  * :func:`resolve_weights` is cheap (no model in memory): it finds the folder the weights live
    in (converting GGUF once) and a content hash, so a run's identity is known before the
    model is loaded (resume looks runs up by it).
  * :func:`load_causal_lm` loads model + tokenizer on an already-resolved device and dtype,
    merging a PEFT adapter for fast evaluation. It decides nothing: ``auto`` is turned into a
    device and dtype only by :func:`evalkit.models.handle.resolve_runtime`, and everything
    loads through a :class:`~evalkit.models.handle.ModelHandle`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models import embedded
from evalkit.models.hashing import folder_sha256
from evalkit.models.hardware import RESOLVED_DTYPES
from evalkit.models.spec import ModelSpec


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a model's weights are and what they hash to."""

    source: str  # local folder, or hub id for hub/vllm forms, or URL for openai
    weights_hash: str
    adapter: str | None = None
    revision: str | None = None


@dataclass
class LoadedModel:
    spec: ModelSpec
    weights: ResolvedWeights
    model: Any  # transformers.PreTrainedModel
    tokenizer: Any
    dtype: str
    device: str


def resolve_weights(spec: ModelSpec) -> ResolvedWeights:
    if spec.kind == "embedded":
        folder = embedded.converted_folder(embedded.embedded_gguf_path(), name="smollm2-135m-instruct")
        return ResolvedWeights(folder, "sha256:" + folder_sha256(folder))
    if spec.kind == "gguf":
        assert spec.path
        folder = embedded.converted_folder(spec.path)
        return ResolvedWeights(folder, "sha256:" + folder_sha256(folder))
    if spec.kind == "hf_dir":
        assert spec.path
        return ResolvedWeights(spec.path, "sha256:" + folder_sha256(spec.path))
    if spec.kind == "peft":
        assert spec.path and spec.adapter
        from evalkit.models.spec import parse_model

        base = resolve_weights(parse_model(spec.path))
        import hashlib

        combined = hashlib.sha256((base.weights_hash + folder_sha256(spec.adapter)).encode()).hexdigest()
        return ResolvedWeights(base.source, "sha256:" + combined, adapter=spec.adapter, revision=base.revision)
    if spec.kind in ("hub", "vllm"):
        assert spec.path
        if os.path.isdir(spec.path):
            return ResolvedWeights(os.path.abspath(spec.path), "sha256:" + folder_sha256(spec.path))
        return resolve_hub(spec)
    if spec.kind == "openai":
        return ResolvedWeights(f"{spec.base_url}#{spec.model_name}", f"endpoint:{spec.base_url}#{spec.model_name}")
    raise EvalkitError(f"model '{spec.raw}': cannot resolve weights for kind {spec.kind}")


def resolve_hub(spec: ModelSpec) -> ResolvedWeights:
    """A hub id pinned to its commit: the weights a run used, not a moving branch name.

    Why the commit: ``org/name`` (or ``@main``) names whatever was pushed last, so two runs under
    the same string can have measured different weights. A cached snapshot resolves offline
    (its folder name is the commit) and loads from that folder; otherwise the hub is asked once
    for the commit. With no cache and no hub this fails at once with the reason, before any run
    is created (``from_pretrained``'s retries took ~54 s to say the same).
    """
    assert spec.path
    return _pin_hub(spec.raw, spec.path, spec.revision or "main")


@functools.lru_cache(maxsize=None)
def _pin_hub(raw: str, path: str, rev: str) -> ResolvedWeights:
    """Once per process: ``prepare`` pins early (to fail fast) and the runner resolves again for
    the identity; the second call must neither ask the hub twice nor see another commit."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(path, revision=rev, local_files_only=True)
        return ResolvedWeights(folder, f"hub:{path}@{os.path.basename(folder)}", revision=None)
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    why = hub_unreachable()
    if why:
        raise EvalkitError(
            f"model '{raw}': not in the local Hugging Face cache and the hub cannot be reached ({why}); "
            "download it first (huggingface-cli download) or pass a local folder"
        )
    from huggingface_hub import HfApi

    try:
        commit = HfApi().model_info(path, revision=rev, timeout=10).sha
    except Exception as exc:  # repository missing, gated, revision unknown: one line from the hub's answer
        raise EvalkitError(f"model '{raw}': the hub does not serve it ({str(exc).splitlines()[0]})") from exc
    return ResolvedWeights(path, f"hub:{path}@{commit}", revision=commit)


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the hub cannot be reached now (offline mode, DNS, refused, timeout), or None."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except socket.gaierror:
        return f"cannot resolve {host}: offline"
    except TimeoutError:
        return f"{host}:{port} did not answer in {timeout_s:.0f} s"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


def load_causal_lm(
    spec: ModelSpec,
    *,
    dtype: str,
    device: str,
    merge_adapter: bool = True,
    weights: ResolvedWeights | None = None,
) -> LoadedModel:
    """Load a local or hub transformers model (kinds embedded, gguf, hf_dir, peft, hub) with the
    ``dtype`` and ``device`` a :class:`~evalkit.models.handle.Runtime` resolved."""
    if spec.kind in ("openai", "vllm"):
        raise EvalkitError(f"model '{spec.raw}': {spec.kind} models are served, not loaded in-process by transformers")
    if dtype not in RESOLVED_DTYPES or device == "auto":
        raise EvalkitError(f"load_causal_lm: device/dtype must be resolved first (got {device}/{dtype}); "
                           "use evalkit.models.handle.get_model")
    weights = weights or resolve_weights(spec)
    dev, dt = device, dtype
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dt)}
    if weights.revision:
        kwargs["revision"] = weights.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(weights.source, **({"revision": weights.revision} if weights.revision else {}))
        model = _from_pretrained(AutoModelForCausalLM, weights.source, kwargs, cuda=str(dev).startswith("cuda"))
    except OSError as exc:
        if spec.kind == "hub" or (spec.kind == "peft" and not os.path.isdir(weights.source)):
            raise EvalkitError(
                f"model '{spec.raw}': '{weights.source}' is not in the local Hugging Face cache and the hub "
                "cannot be reached (offline); download it first or pass a local folder"
            ) from exc
        raise EvalkitError(f"model '{spec.raw}': cannot load from {weights.source}: {str(exc).splitlines()[0]}") from exc
    if weights.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, weights.adapter)
        if merge_adapter:
            model = model.merge_and_unload()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(dev)
    model.eval()
    return LoadedModel(spec=spec, weights=weights, model=model, tokenizer=tokenizer, dtype=dt, device=dev)


def _from_pretrained(auto_cls: Any, source: str, kwargs: dict[str, Any], *, cuda: bool) -> Any:
    """On CUDA ask for SDPA attention (fused kernels; FastLM's CUDA decode passes a 4-D mask SDPA
    accepts), falling back to the model's default where it has no SDPA implementation. On CPU
    the call is unchanged (the model's default attention)."""
    if cuda and "attn_implementation" not in kwargs:
        try:
            return auto_cls.from_pretrained(source, **kwargs, attn_implementation="sdpa")
        except (ValueError, ImportError, NotImplementedError):
            pass
    return auto_cls.from_pretrained(source, **kwargs)

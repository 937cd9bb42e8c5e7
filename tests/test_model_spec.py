from __future__ import annotations

import json

import pytest

from evalkit.errors import EvalkitError
from evalkit.models.hardware import resolve_device, resolve_dtype
from evalkit.models.lmeval_lm import build_lm, openai_model_args, vllm_model_args
from evalkit.models.spec import parse_model


def test_embedded_aliases():
    for raw in ("smollm2-135m", "SmolLM2-135M", "default"):
        assert parse_model(raw).kind == "embedded"


def test_local_folder_adapter_and_gguf(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert parse_model(str(hf)).kind == "hf_dir"
    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(hf)}))
    spec = parse_model(str(ad))
    assert (spec.kind, spec.path, spec.adapter) == ("peft", str(hf), str(ad))
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF")
    assert parse_model(str(g)).kind == "gguf"


def test_hub_openai_vllm_forms():
    spec = parse_model("HuggingFaceTB/SmolLM2-135M-Instruct@main")
    assert (spec.kind, spec.path, spec.revision) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct", "main")
    spec = parse_model("openai:http://127.0.0.1:8000/v1#my-model")
    assert (spec.kind, spec.base_url, spec.model_name) == ("openai", "http://127.0.0.1:8000/v1", "my-model")
    args = openai_model_args(spec)
    assert args["base_url"] == "http://127.0.0.1:8000/v1/completions" and args["model"] == "my-model"
    spec = parse_model("vllm:HuggingFaceTB/SmolLM2-135M-Instruct")
    assert spec.kind == "vllm"
    assert vllm_model_args(spec)["pretrained"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize(
    "raw, message",
    [
        ("", "empty model string"),
        ("not a model!", "unknown model form"),
        ("/no/such/folder", "no such file or folder"),
        ("./missing.gguf", "GGUF file not found"),
        ("openai:127.0.0.1#m", "must start with http"),
        ("openai:http://x/v1", "expected openai:<base_url>#<model>"),
    ],
)
def test_bad_model_strings(raw, message):
    with pytest.raises(EvalkitError, match=message):
        parse_model(raw)


def test_folder_without_weights(tmp_path):
    with pytest.raises(EvalkitError, match="no config.json"):
        parse_model(str(tmp_path))


def test_gpu_only_options_refused_on_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(EvalkitError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(EvalkitError, match="vLLM needs a CUDA GPU"):
        build_lm(parse_model("vllm:HuggingFaceTB/SmolLM2-135M-Instruct"))


def test_dtype_policy():
    assert resolve_dtype("auto", "cuda") == "bfloat16"
    assert resolve_dtype("fp32", "cpu") == "float32"
    assert resolve_dtype("auto", "cpu") in ("bfloat16", "float32")
    with pytest.raises(EvalkitError):
        resolve_dtype("int3", "cpu")


def test_evalkit_is_registered_as_an_lm_eval_model():
    import evalkit.models.lmeval_lm  # noqa: F401  (registration happens on import)
    from lm_eval.api.registry import get_model

    cls = get_model("evalkit")
    assert hasattr(cls, "create_from_arg_string") and hasattr(cls, "create_from_arg_obj")


def test_vllm_knobs_ride_in_the_model_string_and_reach_both_backends(monkeypatch) -> None:
    from evalkit.engines.inspect import model_api
    from evalkit.models.lmeval_lm import vllm_model_args

    spec = parse_model("vllm:HuggingFaceTB/SmolLM2-135M-Instruct,tensor_parallel_size=2,data_parallel_size=2,"
                       "gpu_memory_utilization=0.9,max_model_len=4096")
    assert spec.path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    args = vllm_model_args(spec, "bfloat16")
    assert (args["tensor_parallel_size"], args["data_parallel_size"], args["gpu_memory_utilization"],
            args["max_model_len"]) == (2, 2, 0.9, 4096)
    monkeypatch.setattr("evalkit.models.hardware.cuda_available", lambda: True)
    name, server = model_api.vllm_model_args(spec, "bfloat16")
    assert name == "vllm/HuggingFaceTB/SmolLM2-135M-Instruct" and server["max_model_len"] == 4096
    assert server["tensor_parallel_size"] == 2


@pytest.mark.parametrize("bad, why", [
    ("vllm:org/m,tensor_parallel=2", "expected key=value with key one of"),
    ("vllm:org/m,max_model_len=lots", "is not a int"),
    ("vllm:org/m,gpu_memory_utilization=1.5", "out of range"),
])
def test_bad_vllm_knobs_are_one_line(bad: str, why: str) -> None:
    with pytest.raises(EvalkitError, match=why):
        parse_model(bad)

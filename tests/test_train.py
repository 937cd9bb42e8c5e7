"""A training round through TRL + PEFT on a tiny random Llama (real tokenizer): SFT, DPO, SFT+DPO, merge."""

from __future__ import annotations

import os

import pytest
import torch

from evalkit.errors import EvalkitError
from trainloop.training.train import TrainConfig, merge_adapter, sft_rows, train_round

WORDS = ["red", "blue", "green", "pink"]
SFT = [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": w}]} for w in WORDS]
DPO = [{"prompt": [{"role": "user", "content": f"say {w}"}], "chosen": [{"role": "assistant", "content": w}],
        "rejected": [{"role": "assistant", "content": w.upper()}]} for w in WORDS[:2]]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from evalkit import api

    tok = AutoTokenizer.from_pretrained(api.get_model("smollm2-135m").weights.source)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    folder = str(tmp_path_factory.mktemp("base"))
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_sft_rows_are_prompt_completion() -> None:
    assert sft_rows(SFT[:1]) == [{"prompt": [SFT[0]["messages"][0]], "completion": [SFT[0]["messages"][1]]}]
    with pytest.raises(EvalkitError, match="assistant"):
        sft_rows([{"messages": [{"role": "user", "content": "x"}]}])


def test_method_and_data_checks(base, tmp_path) -> None:
    with pytest.raises(EvalkitError, match="not one of"):
        TrainConfig(method="ppo")
    with pytest.raises(EvalkitError, match="no DPO pairs"):
        train_round(base, SFT, [], str(tmp_path / "a"), TrainConfig(method="sft+dpo", max_steps=1))


def test_sft_then_dpo_saves_one_adapter_that_merges(base, tmp_path) -> None:
    cfg = TrainConfig(method="sft+dpo", max_steps=2, batch_size=2, lora_r=4, lora_alpha=8, bf16=False)
    res = train_round(base, SFT, DPO, str(tmp_path / "ad"), cfg)
    assert [s["stage"] for s in res.stages] == ["sft", "dpo"] and res.steps == 4
    assert [c["step"] for c in res.loss_curve] == [1, 2, 3, 4]
    assert all(c["loss"] > 0 for c in res.loss_curve)
    files = set(os.listdir(res.adapter_dir))
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= files
    assert not {"ref", "_sft", "_dpo"} & files
    merged = merge_adapter(base, res.adapter_dir, str(tmp_path / "merged"))
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(merged)
    b = AutoModelForCausalLM.from_pretrained(base)
    diff = sum((p - q).abs().sum().item() for p, q in zip(m.parameters(), b.parameters()))
    assert diff > 0  # the adapter changed the weights


def test_grpo_with_the_ifeval_checker_as_reward(base, tmp_path) -> None:
    from trainloop.data.ifeval import TOPICS, build_prompt
    from trainloop.training.train import verifier_reward

    p = build_prompt(TOPICS[0], ["change_case:english_lowercase"], seed=1)
    reward = verifier_reward("ifeval")
    import json

    doc = json.dumps(p.to_doc())
    assert reward([None, None], [[{"role": "assistant", "content": "all lower"}], [{"role": "assistant", "content": "Upper"}]],
                  doc=[doc, doc]) == [1.0, 0.0]
    with pytest.raises(EvalkitError, match="no GRPO verifier"):
        verifier_reward("gsm9k")
    rows = [{"prompt": [{"role": "user", "content": p.prompt}], "verifier": "ifeval", "doc": p.to_doc()}] * 2
    cfg = TrainConfig(method="grpo", max_steps=1, lora_r=4, lora_alpha=8, bf16=False, grpo_generations=2,
                      grpo_max_completion=8)
    res = train_round(base, [], [], str(tmp_path / "g"), cfg, grpo=rows)
    assert res.stages[0]["stage"] == "grpo" and res.steps == 1
    assert "adapter_model.safetensors" in os.listdir(res.adapter_dir)


def test_job_file_round_trip_runs_the_same_training(base, tmp_path) -> None:
    """The multi-GPU route writes a job and runs it under accelerate; the job itself runs here."""
    import json

    from trainloop.training.launch import run_job, write_job

    cfg = TrainConfig(method="sft", max_steps=1, batch_size=2, lora_r=4, lora_alpha=8, bf16=False,
                      target_modules=("q_proj", "v_proj"))
    job = write_job(str(tmp_path / "job" / "job.json"), base, SFT, [], str(tmp_path / "ad"), cfg)
    res = run_job(job)
    assert res.steps == 1 and "adapter_model.safetensors" in os.listdir(res.adapter_dir)
    with open(job + ".result.json") as fh:
        assert json.load(fh)["steps"] == 1
    with open(os.path.join(res.adapter_dir, "adapter_config.json")) as fh:
        assert set(json.load(fh)["target_modules"]) == {"q_proj", "v_proj"}


def test_gpu_settings_map_to_accelerate_and_trl_and_refuse_without_gpu(tmp_path) -> None:
    from trainloop.training.launch import launch_command, train_launched
    from trainloop.training.train import grpo_vllm_args

    cmd = launch_command("/x/job.json", TrainConfig(num_processes=4))
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "4" and cmd[-3:] == ["-m", "trainloop.training.launch", "/x/job.json"]
    assert grpo_vllm_args(TrainConfig()) == {}
    if not torch.cuda.is_available():
        with pytest.raises(EvalkitError, match="needs that many CUDA GPUs"):
            train_launched("base", SFT, [], str(tmp_path / "a"), TrainConfig(num_processes=2))
        with pytest.raises(EvalkitError, match="vLLM.*needs a CUDA GPU"):
            grpo_vllm_args(TrainConfig(use_vllm=True))

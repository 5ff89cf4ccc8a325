import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


SCRIPT = Path(__file__).parent / "scripts" / "rrhf_distributed.py"
FSDP2_SCRIPT = Path(__file__).parent / "scripts" / "rrhf_fsdp2.py"

# `accelerate launch --cpu --num_processes 2` starts ONE process in accelerate 1.x unless an MPI hostfile is given
# (`--cpu` always takes the simple launcher). `--multi_gpu` on a machine without GPUs starts two processes with
# torchrun and the gloo backend: a real two-process data-parallel run on the CPU.
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
LAUNCH += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def run(command, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_two_processes_match_one_process_on_the_same_global_batch(tiny_paths, tmp_path):
    # Global batch = the 8 toy prompts: one process with 8 per device, without prompt sharing, vs two processes with 4
    # each, sharing prompts (the default).
    one, two = tmp_path / "one", tmp_path / "two"
    common = [str(SCRIPT), "--model", tiny_paths.policy]
    single = ["--output_dir", str(one), "--per_device_train_batch_size", "8", "--share_prompt", "0"]
    run([sys.executable, *common, *single], tmp_path)
    run([*LAUNCH, *common, "--output_dir", str(two), "--per_device_train_batch_size", "4"], tmp_path)

    reference, result = json.loads((one / "logs.json").read_text()), json.loads((two / "logs.json").read_text())
    assert (reference["num_processes"], result["num_processes"]) == (1, 2)
    assert (reference["share_prompt"], result["share_prompt"]) == (False, True)
    assert len(result["logs"]) == len(reference["logs"]) == 3
    for ours, expected in zip(result["logs"], reference["logs"]):
        for key in ("loss", "rank_loss", "sft_loss", "ranking_accuracy", "logps/best", "logps/worst", "num_tokens"):
            assert ours[key] == pytest.approx(expected[key], rel=1e-4), key
    weights, reference_weights = load_file(two / "model.safetensors"), load_file(one / "model.safetensors")
    for name, value in reference_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lora", [0, 1], ids=["full", "lora-frozen-head"])
def test_fsdp2_two_processes_match_one_process(tiny_paths, tmp_path, lora):
    # `fully_shard` on every decoder layer and the root, gloo on the CPU; shared prompts in both processes, one
    # process without sharing and without FSDP as the reference. With LoRA the head is frozen: its frozen-head path.
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    common = [str(FSDP2_SCRIPT), "--model", tiny_paths.policy, "--lora", str(lora)]
    run([sys.executable, *common, "--output", str(one), "--share_prompt", "0"], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run([*torchrun, *common, "--output", str(two)], tmp_path)
    reference, result = torch.load(one), torch.load(two)
    assert (reference["world"], result["world"]) == (1, 2)
    torch.testing.assert_close(result["loss"], reference["loss"], rtol=1e-5, atol=1e-5)
    assert result["grads"].keys() == reference["grads"].keys() and len(reference["grads"]) >= 8
    for name, grad in reference["grads"].items():
        torch.testing.assert_close(result["grads"][name], grad, rtol=1e-5, atol=1e-5, msg=name)

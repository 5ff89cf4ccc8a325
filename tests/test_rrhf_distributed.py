import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


SCRIPT = Path(__file__).parent / "scripts" / "rrhf_distributed.py"

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
    # Global batch = the 8 toy prompts: one process with 8 per device vs two processes with 4 each.
    one, two = tmp_path / "one", tmp_path / "two"
    common = [str(SCRIPT), "--model", tiny_paths.policy]
    run([sys.executable, *common, "--output_dir", str(one), "--per_device_train_batch_size", "8"], tmp_path)
    run([*LAUNCH, *common, "--output_dir", str(two), "--per_device_train_batch_size", "4"], tmp_path)

    reference, result = json.loads((one / "logs.json").read_text()), json.loads((two / "logs.json").read_text())
    assert (reference["num_processes"], result["num_processes"]) == (1, 2)
    assert len(result["logs"]) == len(reference["logs"]) == 3
    for ours, expected in zip(result["logs"], reference["logs"]):
        for key in ("loss", "rank_loss", "sft_loss", "ranking_accuracy", "logps/best", "logps/worst", "num_tokens"):
            assert ours[key] == pytest.approx(expected[key], rel=1e-4), key
    weights, reference_weights = load_file(two / "model.safetensors"), load_file(one / "model.safetensors")
    for name, value in reference_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-5)

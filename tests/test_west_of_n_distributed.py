"""Offline West-of-N under `accelerate launch` with two CPU processes: split, gathered, equal to one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trl_won.data_utils import completion_text
from trl_won.tiny import toy_prompt_dataset
from trl_won.west_of_n import WestOfNConfig, WestOfNGenerator
from trl_won.west_of_n.storage import read_results


ROOT = Path(__file__).resolve().parents[1]


def text_length(prompts, completions):
    return [float(len(completion_text(c))) for c in completions]


def test_two_processes_split_the_prompts_and_return_the_same_dataset(tiny_paths, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "tests" / "scripts" / "west_of_n_distributed.py"),
        tiny_paths.policy, str(tmp_path / "pairs"), str(tmp_path),
    ]  # fmt: skip
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]

    outputs = [json.loads((tmp_path / f"process-{i}.json").read_text()) for i in range(2)]
    assert [o["num_processes"] for o in outputs] == [2, 2]
    assert outputs[0]["pairs"] == outputs[1]["pairs"]
    # groups of 2 prompts dealt in turn: process 0 did groups 0 and 2, process 1 groups 1 and 3
    shards = tmp_path / "pairs" / "shards"
    for process, expected in ((0, [0, 1, 4, 5]), (1, [2, 3, 6, 7])):
        lines = (shards / f"process-{process}.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["index"] for line in lines) == expected
    assert sorted(read_results(tmp_path / "pairs")) == list(range(8))

    args = WestOfNConfig(
        n=4,
        max_new_tokens=6,
        generation_batch_size=8,
        temperature=1.0,
        pairs_dir=str(tmp_path / "single"),
        show_progress=False,
    )
    single = WestOfNGenerator(tiny_paths.policy, args, reward_funcs=text_length).generate(toy_prompt_dataset())
    distributed = outputs[0]["pairs"]
    assert distributed["prompt"] == single["prompt"]
    assert distributed["chosen"] == single["chosen"] and distributed["rejected"] == single["rejected"]
    assert distributed["chosen_logp"] == pytest.approx(single["chosen_logp"], abs=1e-4)

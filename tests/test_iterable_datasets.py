"""An `IterableDataset` trains exactly like a `Dataset` of the same rows, in one process and in two.

RRHF batches hold `sum(k)` sequences for their prompts: accelerate's `dispatch_batches` (its default for iterable
datasets) used to cut them to one row per prompt. The reward trainers' batches hold twice as many sequences as soft
labels or margins; the online West-of-N collator a variable number of pairs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trl import RewardConfig

from tests.helpers import cpu_training_kwargs
from trl_won.rlaif import RLAIFRewardConfig, RLAIFRewardTrainer
from trl_won.rrhf import RRHFConfig, RRHFTrainer
from trl_won.tiny import toy_preference_dataset, toy_ranking_dataset
from trl_won.west_of_n import WestOfNRewardTrainer


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "iterable_distributed.py"
# Two real processes on the CPU (torchrun + gloo); see tests/test_rrhf_distributed.py for why `--multi_gpu`.
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
LAUNCH += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def rrhf_run(tiny_paths, tmp_path, dataset, batch_size, **overrides):
    settings = dict(per_device_train_batch_size=batch_size, max_steps=3, learning_rate=1e-2, optim="sgd")
    settings.update(train_sampling_strategy="sequential", **overrides)
    args = RRHFConfig(**cpu_training_kwargs(tmp_path / "out", **settings))
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return logs, {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("batch_size", [1, 2])
def test_rrhf_iterable_dataset_trains_like_a_dataset(tiny_paths, tmp_path, batch_size):
    dataset = toy_ranking_dataset()
    reference_logs, reference = rrhf_run(tiny_paths, tmp_path, dataset, batch_size)
    logs, weights = rrhf_run(tiny_paths, tmp_path, dataset.to_iterable_dataset(), batch_size)
    keys = ("loss", "rank_loss", "sft_loss", "logps/best", "logps/worst", "num_tokens")
    assert [[e[k] for k in keys] for e in logs] == [[e[k] for k in keys] for e in reference_logs]
    assert all(torch.equal(weights[name], value) for name, value in reference.items())


def test_trainers_refuse_batch_dispatching(tiny_paths, tmp_path):
    dispatch = {"accelerator_config": {"dispatch_batches": True}}
    with pytest.raises(ValueError, match="RRHFTrainer cannot use `accelerator_config.dispatch_batches=True`"):
        rrhf_run(tiny_paths, tmp_path, toy_ranking_dataset().to_iterable_dataset(), 2, **dispatch)
    args = RLAIFRewardConfig(**cpu_training_kwargs(tmp_path, **dispatch))
    with pytest.raises(ValueError, match="RLAIFRewardTrainer cannot use `accelerator_config.dispatch_batches=True`"):
        RLAIFRewardTrainer(tiny_paths.reward_model, args=args, train_dataset=toy_preference_dataset())
    args = RewardConfig(**cpu_training_kwargs(tmp_path, **dispatch))
    with pytest.raises(ValueError, match="WestOfNRewardTrainer cannot use `accelerator_config.dispatch_batches=True`"):
        WestOfNRewardTrainer(tiny_paths.reward_model, args=args, train_dataset=toy_preference_dataset())


def test_rlaif_evaluates_an_iterable_dataset_like_a_dataset(tiny_paths, tmp_path):
    # Full batches only: transformers' evaluation loop weighs a short last batch differently for an IterableDataset.
    dataset = toy_preference_dataset().add_column("soft_label", [0.9, 0.6, 0.75, 1.0, 0.55, 0.8, 0.65, 0.7])
    args = RLAIFRewardConfig(**cpu_training_kwargs(tmp_path, max_steps=1, per_device_eval_batch_size=4))
    trainer = RLAIFRewardTrainer(tiny_paths.reward_model, args=args, train_dataset=dataset, eval_dataset=dataset)
    reference = trainer.evaluate()["eval_loss"]
    streamed = trainer._prepare_dataset(dataset.to_iterable_dataset(), trainer.processing_class, args, "eval")
    assert trainer.evaluate(eval_dataset=streamed)["eval_loss"] == reference


def test_two_processes_iterable_datasets_train_like_datasets(tiny_paths, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [*LAUNCH, str(SCRIPT), "--policy", tiny_paths.policy, "--reward_model", tiny_paths.reward_model]
    command += ["--output_dir", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads((tmp_path / "report.json").read_text())
    cases = ["rrhf-1", "rrhf-2", "rlaif-2", "west_of_n-2"]
    assert sorted(report) == sorted(f"{case}-{kind}" for case in cases for kind in ("map", "iterable"))
    for case in cases:
        reference, iterable = report[f"{case}-map"], report[f"{case}-iterable"]
        assert reference["num_processes"] == iterable["num_processes"] == 2
        assert len(iterable["losses"]) == 2
        assert iterable["losses"] == reference["losses"], case
        assert iterable.get("pairs") == reference.get("pairs"), case
        weights = torch.load(tmp_path / f"{case}-iterable.pt")
        for name, value in torch.load(tmp_path / f"{case}-map.pt").items():
            assert torch.equal(weights[name], value), (case, name)
    assert report["west_of_n-2-map"]["pairs"] > 0

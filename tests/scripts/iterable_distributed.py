"""Train every trainer with variable-size batches on a `Dataset` and on the same rows as an `IterableDataset`.

Run by tests/test_iterable_datasets.py under `accelerate launch` with two processes (and usable with `python` for one
process). For each case it saves, from the main process, the logged losses and the final trainable weights of both
runs, which the test compares.
"""

import argparse
import json
import os

import torch
from trl import RewardConfig

from tests.helpers import cpu_training_kwargs, exit_distributed_script
from trl_won.data_utils import completion_text
from trl_won.rlaif import RLAIFRewardConfig, RLAIFRewardTrainer
from trl_won.rrhf import RRHFConfig, RRHFTrainer
from trl_won.tiny import toy_preference_dataset, toy_prompt_dataset, toy_ranking_dataset
from trl_won.west_of_n import WestOfNConfig, WestOfNDataCollator, WestOfNRewardTrainer, mix_preferences_and_prompts


SOFT_LABELS = [0.9, 0.6, 0.75, 1.0, 0.55, 0.8, 0.65, 0.7]


def text_length(prompts, completions):
    return [float(len(completion_text(c))) for c in completions]


def training_kwargs(output_dir, batch_size):
    # Sequential sampling: the map-style dataset is read in the same order as the iterable one.
    return cpu_training_kwargs(
        output_dir,
        per_device_train_batch_size=batch_size,
        max_steps=2,
        learning_rate=1e-2,
        optim="sgd",
        train_sampling_strategy="sequential",
    )


def rrhf(paths, output_dir, dataset, batch_size):
    args = RRHFConfig(**training_kwargs(output_dir, batch_size))
    return RRHFTrainer(paths["policy"], args=args, train_dataset=dataset)


def rlaif(paths, output_dir, dataset, batch_size):
    args = RLAIFRewardConfig(**training_kwargs(output_dir, batch_size))
    return RLAIFRewardTrainer(paths["reward_model"], args=args, train_dataset=dataset)


def west_of_n(paths, output_dir, dataset, batch_size):
    collator = WestOfNDataCollator(
        paths["policy"],
        WestOfNConfig(n=3, max_new_tokens=6, generation_batch_size=12, show_progress=False),
        reward_funcs=text_length,
    )
    args = RewardConfig(**training_kwargs(output_dir, batch_size))
    return WestOfNRewardTrainer(paths["reward_model"], args=args, train_dataset=dataset, data_collator=collator)


CASES = {
    "rrhf-1": (rrhf, lambda: toy_ranking_dataset(conversational=True), 1),
    "rrhf-2": (rrhf, lambda: toy_ranking_dataset(), 2),
    "rlaif-2": (rlaif, lambda: toy_preference_dataset().add_column("soft_label", SOFT_LABELS), 2),
    "west_of_n-2": (west_of_n, lambda: mix_preferences_and_prompts(toy_preference_dataset(), toy_prompt_dataset()), 2),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", required=True)
    parser.add_argument("--reward_model", required=True)
    parser.add_argument("--output_dir", required=True)
    cli = parser.parse_args()
    paths = {"policy": cli.policy, "reward_model": cli.reward_model}
    report = {}
    for name, (build, make_dataset, batch_size) in CASES.items():
        for kind in ("map", "iterable"):
            dataset = make_dataset()
            if kind == "iterable":
                dataset = dataset.to_iterable_dataset()
            output_dir = os.path.join(cli.output_dir, f"{name}-{kind}")
            trainer = build(paths, output_dir, dataset, batch_size)
            trainer.train()
            if trainer.accelerator.is_main_process:
                weights = {n: p.detach().cpu() for n, p in trainer.model.named_parameters() if p.requires_grad}
                torch.save(weights, os.path.join(cli.output_dir, f"{name}-{kind}.pt"))
                losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
                report[f"{name}-{kind}"] = {"losses": losses, "num_processes": trainer.accelerator.num_processes}
                if isinstance(trainer.data_collator, WestOfNDataCollator):
                    report[f"{name}-{kind}"]["pairs"] = trainer.data_collator.total_pairs
            trainer.accelerator.wait_for_everyone()
    if report:
        with open(os.path.join(cli.output_dir, "report.json"), "w") as f:
            json.dump(report, f)
    exit_distributed_script()


if __name__ == "__main__":
    main()

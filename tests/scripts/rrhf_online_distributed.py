"""One online RRHF step; every process writes the candidates it sampled and scored. Run by tests/test_rrhf_online.py.

Run it with `accelerate launch --multi_gpu --num_processes 2` (two CPU processes, gloo). With `--none_on_rank R` the
reward function returns None ("does not apply") for every candidate of process R, so that process's micro-batch is
empty (all of its prompt groups skipped) while the other one trains.
"""

import argparse
import gc
import json
import os

from tests.helpers import cpu_training_kwargs, exit_distributed_script
from trl_won.rrhf import RRHFConfig, RRHFTrainer
from trl_won.tiny import toy_prompt_dataset


parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--output_dir", required=True)
parser.add_argument("--none_on_rank", type=int, default=-1)
cli = parser.parse_args()
RANK = int(os.environ.get("RANK", "0"))

calls = []


def token_sum_reward(prompts, completions, completion_ids, **kwargs):
    calls.append({"prompts": prompts, "completion_ids": completion_ids})
    if RANK == cli.none_on_rank:
        return [None] * len(completions)
    return [float(sum(ids) % 101) for ids in completion_ids]


args = RRHFConfig(
    **cpu_training_kwargs(
        cli.output_dir,
        per_device_train_batch_size=2,
        max_steps=1,
        learning_rate=1e-3,
        optim="sgd",
        num_generations=3,
        max_completion_length=6,
    )
)
trainer = RRHFTrainer(cli.model, args=args, train_dataset=toy_prompt_dataset(), reward_funcs=token_sum_reward)
trainer.train()
trainer.save_model()
rank = trainer.accelerator.process_index
with open(os.path.join(cli.output_dir, f"calls-{rank}.json"), "w") as f:
    json.dump({"calls": calls, "num_processes": trainer.accelerator.num_processes}, f)
# Release the DDP-wrapped model (its reducer holds gloo resources) while the process group still exists, then tear
# the group down: left to interpreter shutdown, gloo's threads can abort a process that finished its work.
del trainer
gc.collect()
exit_distributed_script()

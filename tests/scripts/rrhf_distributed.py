"""Train RRHF for a few steps and save the losses and weights; run by tests/test_rrhf_distributed.py.

Run it with `python` (one process) or `accelerate launch --num_processes 2 --cpu` (two processes).
"""

import argparse
import json
import os

from tests.helpers import cpu_training_kwargs, exit_distributed_script
from trl_won.rrhf import RRHFConfig, RRHFTrainer
from trl_won.tiny import toy_ranking_dataset


parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--output_dir", required=True)
parser.add_argument("--per_device_train_batch_size", type=int, required=True)
parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
parser.add_argument("--share_prompt", type=int, default=1)
cli = parser.parse_args()

args = RRHFConfig(
    **cpu_training_kwargs(
        cli.output_dir,
        per_device_train_batch_size=cli.per_device_train_batch_size,
        gradient_accumulation_steps=cli.gradient_accumulation_steps,
        max_steps=3,
        learning_rate=1e-3,
        optim="sgd",
        share_prompt=bool(cli.share_prompt),
    )
)
trainer = RRHFTrainer(cli.model, args=args, train_dataset=toy_ranking_dataset(conversational=True))
trainer.train()
trainer.save_model()
if trainer.accelerator.is_main_process:
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    with open(os.path.join(cli.output_dir, "logs.json"), "w") as f:
        json.dump(
            {
                "logs": logs,
                "num_processes": trainer.accelerator.num_processes,
                "share_prompt": trainer._share_prompt,
                "distributed_type": str(trainer.accelerator.distributed_type),
            },
            f,
        )
exit_distributed_script()

"""DPO with RLAIFLabelerCallback in one or more processes; run by tests/test_rlaif_distributed.py.

The judge records which process calls it. With `--fail_rank R`, sampling raises on process R at step 2.
"""

import argparse
import json
import os

from trl import DPOConfig, DPOTrainer

from tests.helpers import cpu_training_kwargs, exit_distributed_script
from trl_won.generation import SamplingParams
from trl_won.rlaif import PairwiseJudge, PairwiseJudgement, RLAIFLabelerCallback
from trl_won.tiny import TOY_PROMPTS, toy_preference_dataset


parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--output_dir", required=True)
parser.add_argument("--fail_rank", type=int, default=-1)
cli = parser.parse_args()


class RecordingJudge(PairwiseJudge):
    def __init__(self, path):
        self.path = path

    def _judge_pairs(self, prompts, completions_a, completions_b):
        with open(self.path, "a") as f:
            f.write(f"{os.environ.get('RANK', '0')} {len(prompts)}\n")
        return [PairwiseJudgement.from_orders(0.75, 0.75) for _ in prompts]

    def fingerprint_fields(self):
        return {"judge": "recording"}


args = DPOConfig(**cpu_training_kwargs(cli.output_dir, per_device_train_batch_size=2, max_steps=3))
trainer = DPOTrainer(model=cli.model, args=args, train_dataset=toy_preference_dataset())
os.makedirs(cli.output_dir, exist_ok=True)
judge = RecordingJudge(os.path.join(cli.output_dir, "judge_calls.txt"))
callback = RLAIFLabelerCallback(
    judge, trainer, prompts=TOY_PROMPTS[:5], label_every=1, sampling_params=SamplingParams(max_new_tokens=4)
)
if cli.fail_rank >= 0:
    sample_share = callback._sample_share

    def failing(indices, step):
        if step == 2 and trainer.accelerator.process_index == cli.fail_rank:
            raise RuntimeError("simulated sampling failure")
        return sample_share(indices, step)

    callback._sample_share = failing
trainer.add_callback(callback)
trainer.train()
if trainer.accelerator.is_main_process:
    logs = [entry for entry in trainer.state.log_history if "rlaif/failures" in entry]
    with open(os.path.join(cli.output_dir, "logs.json"), "w") as f:
        json.dump({"logs": logs, "num_processes": trainer.accelerator.num_processes}, f)
exit_distributed_script()

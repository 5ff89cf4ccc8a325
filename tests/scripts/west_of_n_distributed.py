"""Run by tests/test_west_of_n_distributed.py under `accelerate launch`: offline West-of-N on several processes."""

import json
import sys

from tests.helpers import exit_distributed_script
from trl_won.data_utils import completion_text
from trl_won.tiny import toy_prompt_dataset
from trl_won.west_of_n import WestOfNConfig, WestOfNGenerator


def text_length(prompts, completions):
    return [float(len(completion_text(c))) for c in completions]


def main(policy: str, pairs_dir: str, out_dir: str) -> None:
    args = WestOfNConfig(
        n=4, max_new_tokens=6, generation_batch_size=8, temperature=1.0, pairs_dir=pairs_dir, show_progress=False
    )
    generator = WestOfNGenerator(policy, args, reward_funcs=text_length)
    pairs = generator.generate(toy_prompt_dataset())
    state = generator.state
    with open(f"{out_dir}/process-{state.process_index}.json", "w") as f:
        json.dump({"num_processes": state.num_processes, "pairs": pairs.to_dict()}, f)
    exit_distributed_script()


if __name__ == "__main__":
    main(*sys.argv[1:])

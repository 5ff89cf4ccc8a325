"""Train a causal LM with RRHF (rank responses to align with human feedback).

A TRL-style script: `TrlParser` over TRL's `ScriptArguments`, `RRHFConfig`, `ModelConfig` and `DatasetMixtureConfig`.
The logic lives in `trl_won/cli/rrhf.py`; this script is `trl-won rrhf` with one difference: without `--output_dir`
it writes under the system's temporary directory, never into the checkout. The dataset has `prompt`, `completions`
(k per prompt) and `rewards`; without `rewards`, `--reward_model_name_or_path` scores the completions first.

```bash
python examples/rrhf.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name ranked.jsonl \
    --max_steps 10 --output_dir rrhf-example
```

The same script, unchanged, with QLoRA on a real model on one GPU, scoring the completions with a reward model:

```bash
python examples/rrhf.py --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name completions.jsonl \
    --reward_model_name_or_path Skywork/Skywork-Reward-V2-Qwen3-0.6B \
    --use_peft --load_in_4bit --lora_target_modules all-linear \
    --learning_rate 1e-4 --per_device_train_batch_size 4 --gradient_accumulation_steps 8 \
    --max_length 512 --output_dir Qwen2.5-1.5B-RRHF
```

Several GPUs: `accelerate launch --num_processes 8 examples/rrhf.py ...` with the same arguments.
"""

import os
import sys
import tempfile

from trl_won.cli.main import run


if __name__ == "__main__":
    output_dir = os.path.join(tempfile.gettempdir(), "trl_won_examples", "rrhf")
    raise SystemExit(run("rrhf", sys.argv[1:], prog="examples/rrhf.py", defaults={"output_dir": output_dir}))

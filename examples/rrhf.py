"""Train a causal LM with RRHF (rank responses to align with human feedback).

A TRL-style script: `TrlParser` over script arguments, `RRHFConfig` and `ModelConfig`. The logic lives in
`trl_won/cli/rrhf.py` (also `trl-won rrhf`). Runs as is on a tiny model built locally (CPU, under a minute):

```bash
python examples/rrhf.py
```

The same script, unchanged, with QLoRA on a real model on one GPU. The dataset has `prompt`, `completions` (k per
prompt) and `rewards`; without `rewards`, `--reward_model_name_or_path` scores the completions before training:

```bash
python examples/rrhf.py \
    --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \
    --dataset_name your/ranked-responses \
    --reward_model_name_or_path Skywork/Skywork-Reward-V2-Qwen3-0.6B \
    --use_peft --load_in_4bit --lora_target_modules all-linear \
    --learning_rate 1e-4 --per_device_train_batch_size 4 --gradient_accumulation_steps 8 \
    --max_length 512 --output_dir Qwen2.5-1.5B-RRHF
```

Several GPUs: `accelerate launch --num_processes 8 examples/rrhf.py ...` with the same arguments.
"""

from trl import ModelConfig, TrlParser

from trl_won import RRHFConfig
from trl_won.cli.rrhf import RRHFScriptArguments, main


if __name__ == "__main__":
    parser = TrlParser((RRHFScriptArguments, RRHFConfig, ModelConfig))
    parser.set_defaults(output_dir="rrhf-output")
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)

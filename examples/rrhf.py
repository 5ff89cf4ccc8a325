"""Train a causal LM with RRHF (rank responses to align with human feedback).

Runs as is on a tiny model built locally (CPU, under a minute):

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

Multi-GPU: `accelerate launch --num_processes 8 examples/rrhf.py ...` with the same arguments.
"""

import os
import tempfile
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from trl_won import RRHFConfig, RRHFTrainer
from trl_won.dataset_loading import load_dataset_dict
from trl_won.tiny import build_tiny_models, toy_ranking_dataset


@dataclass
class RRHFScriptArguments(ScriptArguments):
    """Script arguments for the RRHF example.

    Args:
        reward_model_name_or_path (`str`, *optional*):
            Sequence-classification reward model used to score the completions when the dataset has no `rewards`.
    """

    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Reward model that scores the completions when the dataset has no `rewards` column."},
    )


def main(script_args: RRHFScriptArguments, training_args: RRHFConfig, model_args: ModelConfig):
    if model_args.model_name_or_path is None:
        tiny = build_tiny_models(os.path.join(tempfile.gettempdir(), "trl_won_tiny"))
        model_args.model_name_or_path = tiny.policy
        print(f"No --model_name_or_path given: using the tiny local model in {tiny.policy}")
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }

    if script_args.dataset_name is None:
        train_dataset, eval_dataset = toy_ranking_dataset(), toy_ranking_dataset(conversational=True)
    else:
        dataset = load_dataset_dict(script_args.dataset_name, script_args.dataset_config)
        train_dataset = dataset[script_args.dataset_train_split]
        eval_dataset = dataset.get(script_args.dataset_test_split) if training_args.eval_strategy != "no" else None

    trainer = RRHFTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        reward_funcs=script_args.reward_model_name_or_path,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if eval_dataset is not None:
        trainer.accelerator.print(trainer.evaluate())
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return trainer


if __name__ == "__main__":
    parser = TrlParser((RRHFScriptArguments, RRHFConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    if training_args.output_dir in (None, "trainer_output"):
        training_args.output_dir = "rrhf-output"
    main(script_args, training_args, model_args)

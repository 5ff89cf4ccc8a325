"""`trl-won rrhf`: train a causal LM with RRHF (the script behind `examples/rrhf.py`)."""

import argparse
import os
import tempfile
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from ..dataset_loading import load_split
from ..rrhf import RRHFConfig, RRHFTrainer
from ..tiny import build_tiny_models, toy_ranking_dataset


EXAMPLES = """examples:
  # tiny local model and toy data, CPU, ~15 s
  trl-won rrhf --output_dir rrhf-output

  # QLoRA on a real model; a dataset with prompt/completions/rewards (hub id, .jsonl/.json/.parquet, saved dir)
  trl-won rrhf --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name ranked.jsonl \\
      --use_peft --load_in_4bit --lora_target_modules all-linear --learning_rate 1e-4 --output_dir Qwen-RRHF

  # no rewards column: score the completions with a reward model first
  trl-won rrhf --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name completions.jsonl \\
      --reward_model_name_or_path Skywork/Skywork-Reward-V2-Qwen3-0.6B --output_dir Qwen-RRHF

  # options from a file, several GPUs
  accelerate launch --num_processes 8 -m trl_won rrhf --config rrhf.yaml
"""


@dataclass
class RRHFScriptArguments(ScriptArguments):
    """Script arguments for RRHF training.

    Args:
        reward_model_name_or_path (`str`, *optional*):
            Sequence-classification reward model used to score the completions when the dataset has no `rewards`.
    """

    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Reward model that scores the completions when the dataset has no `rewards` column."},
    )


def main(script_args: RRHFScriptArguments, training_args: RRHFConfig, model_args: ModelConfig) -> RRHFTrainer:
    """Train with RRHF as the command-line arguments say, save the model and return the trainer."""
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
        name, config = script_args.dataset_name, script_args.dataset_config
        train_dataset = load_split(name, script_args.dataset_train_split, config)
        eval_dataset = None
        if training_args.eval_strategy != "no":
            eval_dataset = load_split(name, script_args.dataset_test_split, config)

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


def make_parser(prog: str | None = None) -> TrlParser:
    parser = TrlParser(
        (RRHFScriptArguments, RRHFConfig, ModelConfig),
        prog=prog,
        description="Train a causal LM with RRHF on prompts with ranked, scored completions.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(output_dir="rrhf-output")
    return parser

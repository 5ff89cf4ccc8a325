"""`trl-won rrhf`: train a causal LM with RRHF (the script behind `examples/rrhf.py`)."""

import argparse
import os
from dataclasses import dataclass, field

from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, TrlParser

from ..dataset_loading import select_split
from ..errors import UsageError
from ..rrhf import RRHFConfig
from .common import (
    NO_DATASET,
    add_checkpointing_off_flags,
    check_model_path,
    check_required,
    dataset_source,
    has_dataset,
    load_script_dataset,
    required,
)


EXAMPLES = """examples:
  # full fine-tuning; ranked.jsonl has prompt, completions (k per prompt) and rewards
  trl-won rrhf --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name ranked.jsonl --output_dir Qwen-RRHF

  # QLoRA on one GPU (a hub id, .jsonl/.json/.parquet/.csv file or save_to_disk folder works as --dataset_name)
  trl-won rrhf --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name ranked.jsonl \\
      --use_peft --load_in_4bit --lora_target_modules all-linear --learning_rate 1e-4 --output_dir Qwen-RRHF-QLoRA

  # no rewards column: score the completions with a reward model first
  trl-won rrhf --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name completions.jsonl \\
      --reward_model_name_or_path Skywork/Skywork-Reward-V2-Qwen3-0.6B --output_dir Qwen-RRHF-scored

  # online RRHF: a prompt-only dataset, 4 samples per prompt from the policy, scored by a reward function
  trl-won rrhf --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/tldr \\
      --reward_funcs my_rewards.length_reward --num_generations 4 --max_completion_length 128 \\
      --output_dir Qwen-RRHF-online

  # options (and a `datasets:` mixture) from a YAML file; several GPUs: accelerate launch -m trl_won rrhf ...
  trl-won rrhf --config rrhf.yaml
"""


@dataclass
class RRHFScriptArguments(ScriptArguments):
    """Script arguments for RRHF training: TRL's `ScriptArguments` (`--dataset_name`, `--dataset_config`,
    `--dataset_train_split`, `--dataset_test_split`, `--dataset_streaming`, `--ignore_bias_buffers`) and:

    Args:
        reward_model_name_or_path (`str`, *optional*):
            Sequence-classification reward model that scores the completions: those of a dataset without `rewards`
            (offline), or the policy's samples (online, with a prompt-only dataset).
        reward_funcs (`list[str]`, *optional*):
            Reward functions, resolved as TRL's `trl grpo` script resolves them: TRL's own (`accuracy_reward`,
            `reasoning_accuracy_reward`, `think_format_reward`, `get_soft_overlong_punishment`) or any dotted import
            path (e.g. `my_lib.rewards.custom_reward`, importable from the current directory).
    """

    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Reward model that scores the completions (a dataset without `rewards`, or the policy's samples "
            "for a prompt-only dataset)."
        },
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward functions, as `trl grpo` takes them: `accuracy_reward`, `reasoning_accuracy_reward`, "
            "`think_format_reward`, `get_soft_overlong_punishment`, or any dotted import path (e.g. "
            "`my_lib.rewards.custom_reward`)."
        },
    )


def resolve_reward_funcs(names: list[str] | None) -> list:
    """The reward functions `--reward_funcs` names, resolved as TRL's `trl grpo` script resolves them."""
    import importlib
    import sys

    functions = []
    for name in names or []:
        if name in ("accuracy_reward", "reasoning_accuracy_reward", "think_format_reward"):
            functions.append(getattr(importlib.import_module("trl.rewards"), name))
        elif name == "get_soft_overlong_punishment":  # the values `trl grpo` uses
            from trl.rewards import get_soft_overlong_punishment

            functions.append(get_soft_overlong_punishment(max_completion_len=1280, soft_punish_cache=256))
        elif "." in name:
            module_path, function_name = name.rsplit(".", 1)
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(module_path)
            except ImportError as error:
                raise UsageError(f"--reward_funcs {name}: cannot import {module_path!r} ({error}).") from error
            if not callable(getattr(module, function_name, None)):
                raise UsageError(f"--reward_funcs {name}: {module_path!r} has no function {function_name!r}.")
            functions.append(getattr(module, function_name))
        else:
            raise UsageError(
                f"--reward_funcs {name}: expected one of accuracy_reward, reasoning_accuracy_reward, "
                "think_format_reward, get_soft_overlong_punishment, or a dotted import path (my_lib.rewards.func)."
            )
    return functions


def main(
    script_args: RRHFScriptArguments,
    training_args: RRHFConfig,
    model_args: ModelConfig,
    dataset_args: DatasetMixtureConfig | None = None,
):
    """Train with RRHF as the command-line arguments say, save the model and return the trainer (an
    [`RRHFTrainer`])."""
    check_required(
        (
            bool(model_args.model_name_or_path),
            required("--model_name_or_path", "the causal LM to train (path or hub id)"),
        ),
        (has_dataset(script_args.dataset_name, dataset_args), NO_DATASET),
    )
    from trl import get_peft_config, get_quantization_config

    from ..rrhf import RRHFTrainer

    model = check_model_path(model_args.model_name_or_path, "--model_name_or_path")
    reward_model = check_model_path(script_args.reward_model_name_or_path, "--reward_model_name_or_path")
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    dataset = load_script_dataset(
        script_args.dataset_name, script_args.dataset_config, dataset_args, script_args.dataset_streaming
    )
    source = dataset_source(script_args.dataset_name, dataset_args)
    train_dataset = select_split(dataset, script_args.dataset_train_split, source)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = select_split(dataset, script_args.dataset_test_split, source, "--dataset_test_split")

    trainer = RRHFTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        reward_funcs=([reward_model] if reward_model else []) + resolve_reward_funcs(script_args.reward_funcs),
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    if script_args.ignore_bias_buffers:  # as TRL's scripts do: DDP must not broadcast boolean mask buffers
        import torch

        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]
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
        (RRHFScriptArguments, RRHFConfig, ModelConfig, DatasetMixtureConfig),
        prog=prog,
        description="Train a causal LM with RRHF on prompts with ranked, scored completions, or on samples of the "
        "policy scored online (a prompt-only dataset with --reward_funcs / --reward_model_name_or_path).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(output_dir="rrhf-output")
    add_checkpointing_off_flags(parser)
    return parser

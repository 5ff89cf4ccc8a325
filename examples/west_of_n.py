"""West-of-N end to end: base reward model on half the labeled pairs, West-of-N pairs from the other half's prompts,
student on both, and held-out accuracy of base (HF50%), student (HF50% + West-of-N) and full data (HF100%).

The dataset has `prompt`/`chosen`/`rejected` pairs (or implicit-prompt `chosen`/`rejected` conversations) in a train
and a test split. Models and data are required, as in TRL's scripts; without `--output_dir` everything is written under
the system's temporary directory, never into the checkout:

    python examples/west_of_n.py \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --policy_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
        --dataset_name trl-lib/ultrafeedback_binarized --max_train_pairs 2000 --max_test_pairs 500 \
        --use_peft --lora_task_type SEQ_CLS --n 16 --max_new_tokens 256 --confidence_quantile 0.5 \
        --output_dir won-example

`--mode online` trains the student with `WestOfNDataCollator` inside `WestOfNRewardTrainer` instead of generating the
pairs first. All `RewardConfig`, `WestOfNConfig` and `ModelConfig` options are accepted (`--help`).
"""

import copy
import gc
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from trl import (
    ModelConfig,
    RewardConfig,
    RewardTrainer,
    ScriptArguments,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)
from trl.data_utils import maybe_extract_prompt

from trl_won.cli.common import check_model_path, require
from trl_won.cli.main import run_script
from trl_won.dataset_loading import load_dataset_dict, select_split
from trl_won.errors import UsageError
from trl_won.west_of_n import (
    WestOfNConfig,
    WestOfNDataCollator,
    WestOfNGenerator,
    WestOfNRewardTrainer,
    mix_preference_datasets,
    mix_preferences_and_prompts,
)


@dataclass
class ExampleArguments:
    policy_name_or_path: str | None = field(default=None, metadata={"help": "Policy to sample from (required)."})
    mode: str = field(
        default="offline",
        metadata={
            "help": "'offline': generate the pairs, then train. 'online': label prompts during training.",
            "choices": ["offline", "online"],
        },
    )
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use at most this many training pairs."})
    max_test_pairs: int | None = field(default=None, metadata={"help": "Evaluate on at most this many pairs."})


def load_preferences(script_args, example_args) -> tuple[Dataset, Dataset]:
    name = require(script_args.dataset_name, "--dataset_name", "labeled pairs with a train and a test split")
    dataset = load_dataset_dict(name, script_args.dataset_config)
    source = f"--dataset_name {name!r}"
    train = select_split(dataset, script_args.dataset_train_split, source)
    test = select_split(dataset, script_args.dataset_test_split, source, "--dataset_test_split")
    if example_args.max_train_pairs is not None:
        train = train.select(range(min(example_args.max_train_pairs, len(train))))
    if example_args.max_test_pairs is not None:
        test = test.select(range(min(example_args.max_test_pairs, len(test))))
    # West-of-N needs explicit prompts; split implicit-prompt conversations the way TRL does.
    return train.map(maybe_extract_prompt), test.map(maybe_extract_prompt)


def train_reward_model(model_args, training_args, name, train_dataset, trainer_class=RewardTrainer, **kwargs):
    args = copy.deepcopy(training_args)
    args.output_dir = str(Path(training_args.output_dir) / name)
    args.model_init_kwargs = {"dtype": model_args.dtype} if model_args.dtype else None
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        args=args,
        train_dataset=train_dataset,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
        **kwargs,
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    return trainer


def accuracy(trainer, test: Dataset) -> float:
    return trainer.evaluate(test.select_columns(["prompt", "chosen", "rejected"]))["eval_accuracy"]


def free(*objects):
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(script_args, example_args, training_args, won_args, model_args):
    for flag, value in (
        ("--dataset_streaming", script_args.dataset_streaming),
        ("--ignore_bias_buffers", script_args.ignore_bias_buffers),
    ):
        if value:
            raise UsageError(f"{flag} is not supported by this example.")
    model = require(model_args.model_name_or_path, "--model_name_or_path", "the reward model to train")
    model_args.model_name_or_path = check_model_path(model, "--model_name_or_path")
    policy = require(example_args.policy_name_or_path, "--policy_name_or_path", "the policy to sample from")
    example_args.policy_name_or_path = check_model_path(policy, "--policy_name_or_path")
    if won_args.pairs_dir == WestOfNConfig.pairs_dir:  # default: keep everything under output_dir
        won_args.pairs_dir = str(Path(training_args.output_dir) / "pairs")
    train, test = load_preferences(script_args, example_args)
    halves = train.train_test_split(test_size=0.5, seed=training_args.seed)
    labeled, unlabeled = halves["train"], halves["test"].select_columns(["prompt"])
    print(f"{len(labeled)} labeled pairs (HF50%), {len(unlabeled)} unlabeled prompts, {len(test)} held-out pairs")

    results = []
    base = train_reward_model(model_args, training_args, "base", labeled)
    results.append(("base (HF50%)", f"{len(labeled)}", accuracy(base, test)))
    base_dir = base.args.output_dir
    free(base)

    quantization = get_quantization_config(model_args)
    if example_args.mode == "offline":
        generator = WestOfNGenerator(
            example_args.policy_name_or_path, won_args, reward_model=base_dir, quantization_config=quantization
        )
        pairs = generator.generate(unlabeled)
        print(f"West-of-N: {generator.summary}")
        free(generator)
        student = train_reward_model(model_args, training_args, "student", mix_preference_datasets(labeled, pairs))
        results.append(("student (HF50% + West-of-N)", f"{len(labeled)} + {len(pairs)}", accuracy(student, test)))
    else:
        collator = WestOfNDataCollator(
            example_args.policy_name_or_path, won_args, reward_model=base_dir, quantization_config=quantization
        )
        student = train_reward_model(
            model_args,
            training_args,
            "student",
            mix_preferences_and_prompts(labeled, unlabeled, seed=training_args.seed),
            trainer_class=WestOfNRewardTrainer,
            data_collator=collator,
        )
        pairs = f"{len(labeled)} + {collator.total_pairs} online"
        results.append(("student (HF50% + West-of-N)", pairs, accuracy(student, test)))
        free(collator)
    free(student)

    full = train_reward_model(
        model_args, training_args, "full", train.select_columns(["prompt", "chosen", "rejected"])
    )
    results.append(("full (HF100%)", f"{len(train)}", accuracy(full, test)))
    free(full)

    print(f"\n{'reward model':<30}{'training pairs':>20}{'held-out accuracy':>20}")
    for name, pairs, value in results:
        print(f"{name:<30}{pairs:>20}{value:>20.3f}")


def make_parser():
    parser = TrlParser(
        (ScriptArguments, ExampleArguments, RewardConfig, WestOfNConfig, ModelConfig), prog="examples/west_of_n.py"
    )
    output_dir = os.path.join(tempfile.gettempdir(), "trl_won_examples", "west_of_n")
    defaults = {"output_dir": output_dir, "report_to": "none", "save_strategy": "no", "logging_steps": 10}
    if not torch.cuda.is_available():
        defaults.update(use_cpu=True, bf16=False)
    parser.set_defaults(**defaults)
    return parser


if __name__ == "__main__":
    raise SystemExit(run_script(make_parser(), main, sys.argv[1:]))

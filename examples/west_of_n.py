"""West-of-N end to end: base reward model on half the labeled pairs, West-of-N pairs from the other half's prompts,
student on both, and held-out accuracy of base (HF50%), student (HF50% + West-of-N) and full data (HF100%).

With no model or dataset given it builds tiny random models and a small synthetic preference dataset locally and runs
on a CPU in a few minutes (the accuracies of random tiny models mean nothing; the point is that it runs):

    python examples/west_of_n.py

The same script, unchanged, on real models and data:

    python examples/west_of_n.py \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --policy_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
        --dataset_name trl-lib/ultrafeedback_binarized --output_dir won-example \
        --use_peft --lora_task_type SEQ_CLS --n 16 --max_new_tokens 256 --confidence_quantile 0.5

`--mode online` trains the student with `WestOfNDataCollator` inside `WestOfNRewardTrainer` instead of generating the
pairs first. All `RewardConfig`, `WestOfNConfig` and `ModelConfig` options are accepted (`--help`).
"""

import copy
import gc
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict, load_dataset
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

from trl_won.tiny import build_tiny_models
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
    policy_name_or_path: str | None = field(
        default=None, metadata={"help": "Policy to sample from. Default: a tiny random Llama built locally."}
    )
    mode: str = field(
        default="offline",
        metadata={
            "help": "'offline': generate the pairs, then train. 'online': label prompts during training.",
            "choices": ["offline", "online"],
        },
    )
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use at most this many training pairs."})
    max_test_pairs: int | None = field(default=None, metadata={"help": "Evaluate on at most this many pairs."})


def synthetic_preferences(num_pairs: int, seed: int) -> Dataset:
    """Labeled pairs with a simple rule (the correct answer is preferred), for the tiny run."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(num_pairs):
        a, b = rng.sample(range(100), 2)
        if rng.random() < 0.5:
            prompt = f"Which number is larger, {a} or {b}?"
            good, bad = f" {max(a, b)} is larger.", f" {min(a, b)} is larger."
        else:
            prompt = f"What is {a} plus {b}?"
            good, bad = f" {a} plus {b} is {a + b}.", f" {a} plus {b} is {a + b + rng.randint(1, 9)}."
        rows.append({"prompt": prompt, "chosen": good, "rejected": bad})
    return Dataset.from_list(rows)


def load_preferences(script_args, example_args, seed: int) -> tuple[Dataset, Dataset]:
    if script_args.dataset_name is None:
        dataset = DatasetDict({"train": synthetic_preferences(256, seed), "test": synthetic_preferences(64, seed + 1)})
        script_args.dataset_train_split, script_args.dataset_test_split = "train", "test"
    else:
        dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    train, test = dataset[script_args.dataset_train_split], dataset[script_args.dataset_test_split]
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
    if model_args.model_name_or_path is None or example_args.policy_name_or_path is None:
        tiny = build_tiny_models(Path(training_args.output_dir) / "tiny")
        model_args.model_name_or_path = model_args.model_name_or_path or tiny.reward_model
        example_args.policy_name_or_path = example_args.policy_name_or_path or tiny.policy
    if won_args.pairs_dir == WestOfNConfig.pairs_dir:  # default: keep everything under output_dir
        won_args.pairs_dir = str(Path(training_args.output_dir) / "pairs")
    train, test = load_preferences(script_args, example_args, training_args.seed)
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
    parser = TrlParser((ScriptArguments, ExampleArguments, RewardConfig, WestOfNConfig, ModelConfig))
    defaults = {"output_dir": "west_of_n_example", "report_to": "none", "save_strategy": "no", "logging_steps": 10}
    if not torch.cuda.is_available():
        defaults.update(use_cpu=True, bf16=False)
    parser.set_defaults(**defaults)
    return parser


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())

"""Training sets from West-of-N pairs: mixing human-labeled pairs with West-of-N data (1:1 by default, as in the
paper), and iterative West-of-N, where each round's student reward model labels the next round's pairs (paper
section 2, step 6).
"""

import copy
import dataclasses
import gc
import logging
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict, concatenate_datasets
from trl import RewardConfig, RewardTrainer
from trl.data_utils import maybe_extract_prompt

from ..data_utils import DatasetFormatError, is_conversational_prompt, require_columns, row_error
from ..models import restore_adapter_dtypes
from .config import StudentRewardConfig, WestOfNConfig
from .generator import WestOfNGenerator


logger = logging.getLogger(__name__)

PAIR_COLUMNS = ["prompt", "chosen", "rejected"]


def _check_formats(first: Dataset, second: Dataset, first_name: str, second_name: str) -> None:
    if len(first) and len(second):
        a, b = is_conversational_prompt(first[0]["prompt"]), is_conversational_prompt(second[0]["prompt"])
        if a != b:
            raise DatasetFormatError(
                f"The {first_name} dataset is {'conversational' if a else 'standard'} but the {second_name} dataset "
                f"is {'conversational' if b else 'standard'}. Convert one so that both use the same format."
            )


def _check_dataset(dataset, name: str, argument: str) -> None:
    if not isinstance(dataset, Dataset):
        fix = " Pass one split, e.g. `dataset['train']`." if isinstance(dataset, DatasetDict) else ""
        fix = fix or " Build one with `Dataset.from_list(rows)`."
        raise TypeError(f"`{argument}` must be a `datasets.Dataset`, got {type(dataset).__name__}.{fix}")


def _check_ratio(ratio) -> None:
    if ratio is None:
        return
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        raise TypeError(f"`ratio` must be a finite number or None, got {ratio!r}.")


def check_pair_datasets(preference_dataset, ratio) -> None:
    """The checks of [`mix_preference_datasets`] that need no synthetic data (run before generating it)."""
    _check_dataset(preference_dataset, "preference", "preference_dataset")
    _check_ratio(ratio)
    if ratio is not None and ratio < 0:
        raise ValueError(f"`ratio` must be >= 0 (generated pairs per labeled pair), got {ratio}.")
    _with_explicit_prompts(preference_dataset.select(range(min(1, len(preference_dataset)))), "preference")
    _check_nones(preference_dataset, "preference")


def _check_nones(dataset: Dataset, name: str) -> None:
    for column in ("chosen", "rejected"):  # prompt-only rows (online mixes) have no answer to train on
        missing = next((i for i, value in enumerate(dataset[column]) if value is None), None)
        if missing is not None:
            raise row_error(
                missing,
                column,
                f"is None in the {name} dataset: it needs labeled pairs only.",
                "Drop the prompt-only rows (`dataset.filter(lambda row: row['chosen'] is not None)`).",
            )


def _with_explicit_prompts(dataset: Dataset, name: str) -> Dataset:
    """Split an implicit prompt out of `chosen`/`rejected` as TRL does, when there is no usable `prompt` column."""
    if len(dataset) == 0 and name == "preference":
        raise DatasetFormatError("The preference dataset has no rows: the mix needs labeled pairs.")
    columns = dataset.column_names
    require_columns(columns, ["chosen", "rejected"], name, "Give labeled pairs with `chosen` and `rejected` columns.")
    _check_nones(dataset, name)
    if len(dataset) and (
        "prompt" not in columns
        or is_conversational_prompt(dataset[0]["prompt"]) != is_conversational_prompt(dataset[0]["chosen"])
    ):
        dataset = dataset.map(maybe_extract_prompt, desc=f"Extracting the prompts of the {name} dataset")
    return dataset


def _draw(num_available: int, count: int, seed: int, cycle: bool) -> list[int]:
    """`count` indices in `range(num_available)` in random order, reshuffling each pass when `cycle` allows repeats."""
    rng = random.Random(seed)
    indices: list[int] = []
    while len(indices) < count:
        order = list(range(num_available))
        rng.shuffle(order)
        indices += order[: count - len(indices)]
        if not cycle:
            break
    return indices


def mix_preferences_and_prompts(
    preference_dataset: Dataset, prompt_dataset: Dataset, ratio: float | None = 1.0, seed: int = 0
) -> Dataset:
    """The training set of online West-of-N: labeled pairs plus prompt-only rows, shuffled together.

    Prompt-only rows have `chosen` and `rejected` set to `None`; [`WestOfNDataCollator`] labels them during training.

    Args:
        preference_dataset ([`~datasets.Dataset`]):
            Labeled pairs with `prompt`, `chosen`, `rejected` (and optionally `margin`); other columns are dropped. A
            prompt left implicit in `chosen`/`rejected` is split out as TRL does (`maybe_extract_prompt`).
        prompt_dataset ([`~datasets.Dataset`]):
            Unlabeled prompts in a `prompt` column, in the same format (standard or conversational).
        ratio (`float` or `None`, *optional*, defaults to `1.0`):
            Prompt-only rows per labeled row (`1.0`: the paper's 1:1 mix). Prompts are drawn at random without
            replacement; if more are needed than there are, they are reused (each use samples fresh responses).
            `None` uses every prompt once.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the draw and of the final shuffle.
    """
    _check_dataset(preference_dataset, "preference", "preference_dataset")
    _check_dataset(prompt_dataset, "prompt", "prompt_dataset")
    _check_ratio(ratio)
    preference_dataset = _with_explicit_prompts(preference_dataset, "preference")
    require_columns(prompt_dataset.column_names, ["prompt"], "prompt", "Rename the prompt column to 'prompt'.")
    _check_formats(preference_dataset, prompt_dataset, "preference", "prompt")
    if ratio is not None and not ratio >= 0:
        raise ValueError(f"`ratio` must be >= 0 (prompt-only rows per labeled row), got {ratio}.")
    if len(prompt_dataset) == 0:
        raise ValueError("The prompt dataset is empty.")
    columns = PAIR_COLUMNS + (["margin"] if "margin" in preference_dataset.column_names else [])
    labeled = preference_dataset.select_columns(columns)
    count = len(prompt_dataset) if ratio is None else round(ratio * len(labeled))
    if count > len(prompt_dataset):
        logger.info("Reusing prompts: %d prompt-only rows from %d prompts.", count, len(prompt_dataset))
    indices = _draw(len(prompt_dataset), count, seed, cycle=True)
    prompts = prompt_dataset.select_columns(["prompt"]).select(indices)
    unlabeled = Dataset.from_dict(
        {"prompt": prompts["prompt"], **{c: [None] * len(prompts) for c in columns if c != "prompt"}},
        features=labeled.features,
    )
    return concatenate_datasets([labeled, unlabeled]).shuffle(seed=seed)


def mix_preference_datasets(
    preference_dataset: Dataset, synthetic_dataset: Dataset, ratio: float | None = 1.0, seed: int = 0
) -> Dataset:
    """The training set of offline West-of-N: labeled pairs plus generated pairs, shuffled together.

    Args:
        preference_dataset ([`~datasets.Dataset`]):
            Labeled pairs (`prompt`, `chosen`, `rejected`).
        synthetic_dataset ([`~datasets.Dataset`]):
            West-of-N pairs in the same format, e.g. from [`WestOfNGenerator`]; its analysis columns are dropped.
        ratio (`float` or `None`, *optional*, defaults to `1.0`):
            Generated pairs per labeled pair (`1.0`: the paper's 1:1 mix), drawn at random without replacement; if
            there are fewer, all are used. `None` uses all of them.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the draw and of the final shuffle.
    """
    _check_dataset(preference_dataset, "preference", "preference_dataset")
    _check_dataset(synthetic_dataset, "synthetic", "synthetic_dataset")
    _check_ratio(ratio)
    preference_dataset = _with_explicit_prompts(preference_dataset, "preference")
    synthetic_dataset = _with_explicit_prompts(synthetic_dataset, "synthetic")
    _check_formats(preference_dataset, synthetic_dataset, "preference", "synthetic")
    if ratio is not None and not ratio >= 0:
        raise ValueError(f"`ratio` must be >= 0 (generated pairs per labeled pair), got {ratio}.")
    labeled = preference_dataset.select_columns(PAIR_COLUMNS)
    count = len(synthetic_dataset) if ratio is None else round(ratio * len(labeled))
    if count > len(synthetic_dataset):
        logger.warning(
            "Asked for %d generated pairs but there are %d (after filtering); using all of them.",
            count,
            len(synthetic_dataset),
        )
    indices = _draw(len(synthetic_dataset), min(count, len(synthetic_dataset)), seed, cycle=False)
    synthetic = synthetic_dataset.select_columns(PAIR_COLUMNS).select(indices)
    synthetic = Dataset.from_list(synthetic.to_list(), features=labeled.features)
    return concatenate_datasets([labeled, synthetic]).shuffle(seed=seed)


# Iterative West-of-N


def _per_round(value, num_rounds: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != num_rounds:
            raise ValueError(f"`{name}` has {len(value)} entries for {num_rounds} rounds; give one per round or one.")
        return list(value)
    return [value] * num_rounds


def iterative_west_of_n(
    policy,
    base_reward_model: str,
    preference_dataset: Dataset,
    prompt_dataset: Dataset | Sequence[Dataset],
    *,
    student_model: str,
    output_dir: str,
    num_rounds: int = 2,
    west_of_n_args: WestOfNConfig | None = None,
    reward_args: RewardConfig | None = None,
    mix_ratio: float | None = 1.0,
    processing_class=None,
    reward_processing_class=None,
    peft_config=None,
    quantization_config=None,
) -> list[str]:
    r"""
    Run several rounds of offline West-of-N; the student of each round is the base model of the next.

    Round `r` (1-based) writes to `output_dir/round-r/`: `pairs/` (the [`WestOfNGenerator`] directory, resumable) and
    `student/` (the trained reward model). A rerun skips the rounds whose student is already saved and resumes the
    generation of the others.

    Args:
        policy (`str`, model, or a list with one per round):
            The policy to sample from; a list lets later rounds sample from a newer (e.g. RL-tuned) policy.
        base_reward_model (`str`):
            The first round's base reward model (trained on the labeled pairs), a path or hub id.
        preference_dataset ([`~datasets.Dataset`]):
            The human-labeled pairs, mixed into every round's training set.
        prompt_dataset ([`~datasets.Dataset`] or a list with one per round):
            Unlabeled prompts; one dataset for every round, or one per round.
        student_model (`str`):
            The checkpoint every student is initialized from (typically the one the base model was trained from).
        output_dir (`str`):
            Where the rounds are written.
        num_rounds (`int`, *optional*, defaults to `2`):
            Number of rounds.
        west_of_n_args ([`WestOfNConfig`], *optional*):
            Generation settings; `pairs_dir` is set per round.
        reward_args ([`~trl.RewardConfig`], *optional*):
            Student training settings; `output_dir` is set per round.
        mix_ratio (`float` or `None`, *optional*, defaults to `1.0`):
            Generated pairs per labeled pair in the student's training set (see [`mix_preference_datasets`]).
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The policy's tokenizer.
        reward_processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The students' tokenizer (loaded from `student_model` when omitted).
        peft_config ([`~peft.PeftConfig`], *optional*):
            LoRA for the students (set `modules_to_save=["score"]`).
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization of the policy when loaded from a path.

    Returns:
        `list[str]`: The students' directories, one per round; the last one is the final reward model.
    """
    # Everything that can be checked is checked before the first round generates anything (hours, on real models).
    if isinstance(num_rounds, bool) or not isinstance(num_rounds, int):
        raise TypeError(f"`num_rounds` must be an integer, got {type(num_rounds).__name__} {num_rounds!r}.")
    if num_rounds < 1:
        raise ValueError(f"`num_rounds` must be >= 1, got {num_rounds}.")
    if west_of_n_args is not None and not isinstance(west_of_n_args, WestOfNConfig):
        raise TypeError(f"`west_of_n_args` must be a `WestOfNConfig`, got {type(west_of_n_args).__name__}.")
    if reward_args is not None and not isinstance(reward_args, RewardConfig):
        raise TypeError(f"`reward_args` must be a `trl.RewardConfig`, got {type(reward_args).__name__}.")
    for name, value in (("base_reward_model", base_reward_model), ("student_model", student_model)):
        if not isinstance(value, str) or not value:
            raise TypeError(
                f"`{name}` must be a path or hub id (each round's student is saved and reloaded by path), got "
                f"{type(value).__name__}. Save the model with `save_pretrained` and pass its directory."
            )
    if not isinstance(output_dir, (str, os.PathLike)) or not str(output_dir).strip():
        raise ValueError(f"`output_dir` must be a directory path, got {output_dir!r}.")
    policies = _per_round(policy, num_rounds, "policy")
    prompts = _per_round(prompt_dataset, num_rounds, "prompt_dataset")
    check_pair_datasets(preference_dataset, mix_ratio)
    west_of_n_args = west_of_n_args or WestOfNConfig()
    base = base_reward_model
    students = []
    for round_index in range(1, num_rounds + 1):
        round_dir = Path(output_dir) / f"round-{round_index}"
        student_dir = round_dir / "student"
        if (student_dir / "config.json").exists() or (student_dir / "adapter_config.json").exists():
            logger.info("Round %d: student already trained in %s, skipping.", round_index, student_dir)
        else:
            args = dataclasses.replace(west_of_n_args, pairs_dir=str(round_dir / "pairs"))
            generator = WestOfNGenerator(
                policies[round_index - 1],
                args,
                reward_model=base,
                processing_class=processing_class,
                quantization_config=quantization_config,
            )
            pairs = generator.generate(prompts[round_index - 1])
            del generator
            _free_memory()
            logger.info("Round %d: %d West-of-N pairs labeled by %s.", round_index, len(pairs), base)
            if reward_args is None:
                training_args = StudentRewardConfig(output_dir=str(student_dir))
            else:
                training_args = copy.deepcopy(reward_args)
                training_args.output_dir = str(student_dir)
            train_dataset = mix_preference_datasets(
                preference_dataset, pairs, ratio=mix_ratio, seed=training_args.seed + round_index
            )
            trainer = RewardTrainer(
                model=student_model,
                args=training_args,
                train_dataset=train_dataset,
                processing_class=copy.deepcopy(reward_processing_class),
                peft_config=copy.deepcopy(peft_config),
            )
            restore_adapter_dtypes(trainer.model, training_args)  # for a student quantized in `model_init_kwargs`
            trainer.train()
            trainer.save_model(str(student_dir))
            del trainer
            _free_memory()
        students.append(str(student_dir))
        base = str(student_dir)
    return students


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

"""Iterative West-of-N: each round's student reward model labels the next round's pairs (paper section 2, step 6)."""

import copy
import dataclasses
import gc
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from .config import WestOfNConfig
from .generator import WestOfNGenerator
from .mixing import check_pair_datasets, mix_preference_datasets


logger = logging.getLogger(__name__)


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
                training_args = RewardConfig(output_dir=str(student_dir))
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

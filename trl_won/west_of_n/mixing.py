"""Mixing human-labeled pairs with West-of-N data, 1:1 by default as in the paper."""

import logging
import math
import random

from datasets import Dataset, DatasetDict, concatenate_datasets
from trl.data_utils import maybe_extract_prompt

from ..data_utils import DatasetFormatError, is_conversational_prompt, require_columns, row_error


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

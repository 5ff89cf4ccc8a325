"""Scoring the completions of an RRHF dataset with reward functions before training."""

import json
import logging
import os
from collections.abc import Callable, Sequence

from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from tqdm.auto import tqdm

from ..data_utils import DatasetFormatError, require_columns
from ..identity import json_sha256
from ..rewards import as_reward_funcs, reward_func_identity, weighted_rewards
from ..utils import atomic_write_text
from .data import HOW_TO_FORMAT, validate_row


logger = logging.getLogger(__name__)


def add_rewards(
    dataset: Dataset,
    reward_funcs: Sequence[Callable],
    reward_weights: Sequence[float] | None = None,
    cache_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> Dataset:
    """Score every completion of an RRHF dataset and add the scores as its `rewards` column.

    Each reward function is called once per prompt with `prompts` (the prompt repeated for each of its completions),
    `completions`, and the row's other columns repeated the same way (TRL GRPO's reward-function signature). The
    weighted sum of the functions' scores is the reward. Under `accelerate launch` the rows are split across processes
    and the scores gathered, so every process returns the same dataset.

    Args:
        dataset ([`~datasets.Dataset`]):
            Rows with `prompt` and `completions`.
        reward_funcs (callable, reward model or a `Sequence` of them):
            Reward functions and/or reward models (objects or paths; see [`~trl_won.rewards.as_reward_funcs`]).
        reward_weights (`Sequence[float]`, *optional*):
            One weight per reward function (default 1).
        cache_dir (`str` or `os.PathLike`, *optional*):
            If given, the scores are saved there, keyed by a hash of the prompts, the completions and what identifies
            each reward function (see [`reward_func_identity`]: a reward model's weights digest, a judge's
            fingerprint, a plain function's source), and reused by a rerun, so that a crash or a resumed run does not
            pay for scoring twice. Reward functions that cannot be identified reliably are never cached.
        show_progress (`bool`, *optional*, defaults to `True`):
            A progress bar over the prompts (on the local main process).

    Returns:
        [`~datasets.Dataset`]: `dataset` with a `rewards` column.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"`dataset` must be a `datasets.Dataset`, got {type(dataset).__name__}. Build one with "
            "`Dataset.from_list(rows)` or `Dataset.from_dict(columns)`."
        )
    require_columns(dataset.column_names, ["prompt", "completions"], "scoring", HOW_TO_FORMAT)
    if "rewards" in dataset.column_names:
        raise DatasetFormatError(
            "The dataset already has a 'rewards' column. Remove it (`dataset.remove_columns('rewards')`) to score the "
            "completions again, or train on it as it is."
        )
    for row, example in enumerate(dataset):
        validate_row(example, row, check_rewards=False)
    reward_funcs = as_reward_funcs(reward_funcs)
    cache_path = None
    fingerprint = _fingerprint(dataset, reward_funcs, reward_weights) if cache_dir is not None else None
    if cache_dir is not None and fingerprint is None:
        logger.info("Completion rewards are not saved: a reward function cannot be identified across runs.")
    if fingerprint is not None:
        cache_path = os.path.join(cache_dir, f"rrhf_rewards-{fingerprint}.json")
        if os.path.exists(cache_path):
            with open(cache_path) as f:
                logger.info("Reusing the completion rewards saved in %s", cache_path)
                return dataset.add_column("rewards", json.load(f))

    state = PartialState()
    other_columns = [c for c in dataset.column_names if c not in ("prompt", "completions")]
    with state.split_between_processes(list(range(len(dataset)))) as rows:
        local = []
        shown = show_progress and state.is_local_main_process
        for row in tqdm(rows, desc="Scoring completions", unit="prompt", disable=not shown):
            example = dataset[row]
            k = len(example["completions"])
            extra = {column: [example[column]] * k for column in other_columns}
            scores = weighted_rewards(
                reward_funcs, [example["prompt"]] * k, example["completions"], reward_weights, **extra
            )
            local.append((row, scores))
    scored = dict(gather_object(local)) if state.num_processes > 1 else dict(local)
    rewards = [scored[row] for row in range(len(dataset))]

    if cache_path is not None and state.is_main_process:
        os.makedirs(cache_dir, exist_ok=True)
        atomic_write_text(cache_path, json.dumps(rewards))
    return dataset.add_column("rewards", rewards)


def _fingerprint(dataset: Dataset, reward_funcs, reward_weights) -> str | None:
    identities = [reward_func_identity(f) for f in reward_funcs]
    if any(identity is None for identity in identities):
        return None
    weights = list(reward_weights) if reward_weights is not None else None
    examples = dataset.select_columns(["prompt", "completions"])
    return json_sha256(identities, weights, *examples, ensure_ascii=True)[:16]

"""RRHF datasets: validation, selection of completions, tokenization and batching.

A row is `{"prompt", "completions": [k completions], "rewards": [k floats]}`, standard (strings) or conversational
(the prompt a list of messages, each completion a list of assistant messages). After tokenization a row is
`{"prompt_ids", "completion_ids": [k lists], "rewards"}`; the collator turns a batch of such rows into one padded
tensor of `sum(k)` sequences.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.utils import pad

from ..data_utils import (
    check_finite,
    check_messages,
    completion_text,
    row_error,
    tokenize_prompt_completion,
)


logger = logging.getLogger(__name__)

HOW_TO_FORMAT = (
    'Each row must be {"prompt": ..., "completions": [at least 2 completions], "rewards": [one number each]}.'
)
HOW_TO_SAMPLE = (
    'For online RRHF each row is {"prompt": ...}, optionally with "completions": [fixed completions ranked with the '
    "samples], and any other columns the reward functions read."
)


def validate_row(example: dict[str, Any], row: int, check_rewards: bool = True) -> None:
    """Raise a `ValueError` naming `row` and the column if `example` is not a valid RRHF row."""
    prompt, completions = example.get("prompt"), example.get("completions")
    conversational = isinstance(prompt, list) and bool(prompt)
    if conversational:
        check_messages(prompt, row, "prompt")
    elif not isinstance(prompt, str):
        raise row_error(row, "prompt", f"expected a string or a list of messages, got {prompt!r:.80}.", HOW_TO_FORMAT)
    check_completions(completions, conversational, row, minimum=2)
    if check_rewards:
        rewards = example.get("rewards")
        if not isinstance(rewards, (list, tuple)):
            raise row_error(row, "rewards", f"expected a list, got {type(rewards).__name__}.", HOW_TO_FORMAT)
        if len(rewards) != len(completions):
            raise row_error(
                row,
                "rewards",
                f"has {len(rewards)} rewards for {len(completions)} completions.",
                "Give exactly one reward per completion, in the same order.",
            )
        for i, reward in enumerate(rewards):
            check_finite(reward, row, "rewards", i)


def check_completions(completions: Any, conversational: bool, row: int, minimum: int, fix: str = HOW_TO_FORMAT):
    """Raise a `ValueError` naming `row` unless `completions` is a list of at least `minimum` non-empty completions in
    the prompt's format (strings, or lists of assistant messages for a conversational prompt)."""
    if not isinstance(completions, (list, tuple)):
        raise row_error(row, "completions", f"expected a list, got {type(completions).__name__}.", fix)
    if len(completions) < minimum:
        raise row_error(
            row,
            "completions",
            f"has {len(completions)} completion(s); ranking needs at least {minimum}.",
            "Drop the row or add completions.",
        )
    for i, completion in enumerate(completions):
        if conversational != (isinstance(completion, list) and bool(completion)) or (
            not conversational and not isinstance(completion, str)
        ):
            expected = "a list of assistant messages" if conversational else "a string"
            raise row_error(
                row,
                f"completions[{i}]",
                f"the prompt is {'conversational' if conversational else 'a string'} so each completion must be "
                f"{expected}, got {completion!r:.80}.",
                "Use the same format for the prompt and its completions.",
            )
        if conversational:
            check_messages(completion, row, f"completions[{i}]")
        if not completion_text(completion).strip():
            raise row_error(row, f"completions[{i}]", "is empty.", "Remove empty completions from the row.")


def validate_prompt_row(
    example: dict[str, Any],
    row: int,
    tokenize: Callable[[Any], list[int]],
    max_length: int | None,
    max_positions: int | None,
) -> None:
    """Raise a `ValueError` naming `row` and the column if `example` is not a valid row for online RRHF.

    The row needs a `prompt` (a string or a list of messages) and may carry fixed `completions` in the same format,
    ranked with the samples. The prompt, tokenized by `tokenize` as the sampler tokenizes it, must leave room for a
    completion token under `max_length` and the model's `max_positions`.
    """
    prompt = example.get("prompt")
    conversational = isinstance(prompt, list) and bool(prompt)
    if conversational:
        check_messages(prompt, row, "prompt")
    elif not isinstance(prompt, str) or not prompt:
        raise row_error(
            row, "prompt", f"expected a non-empty string or a list of messages, got {prompt!r:.80}.", HOW_TO_SAMPLE
        )
    if example.get("completions") is not None:
        check_completions(example["completions"], conversational, row, minimum=0, fix=HOW_TO_SAMPLE)
    prompt_ids = tokenize(prompt)
    for limit, name, fix in (
        (max_length, "max_length", "Increase `max_length` in RRHFConfig or shorten/drop the prompt."),
        (max_positions, "the model's max_position_embeddings", "Shorten or drop the prompt."),
    ):
        if limit is not None and len(prompt_ids) >= limit:
            raise row_error(
                row,
                "prompt",
                f"is {len(prompt_ids)} tokens long, which leaves no room for a completion under {name}={limit}.",
                fix,
            )


def validate_tokenized_row(example: dict[str, Any], row: int) -> None:
    """Raise a `ValueError` naming `row` and the column if `example` is not a valid tokenized RRHF row."""
    fix = 'A tokenized row is {"prompt_ids": [ids], "completion_ids": [[ids] per completion], "rewards": [numbers]}.'

    def is_ids(value):
        return isinstance(value, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)

    prompt_ids, completion_ids = example.get("prompt_ids"), example.get("completion_ids")
    if not is_ids(prompt_ids) or not prompt_ids:
        problem = (
            "expected a non-empty list of token ids (the first completion token needs one before it), got "
            f"{prompt_ids!r:.80}."
        )
        raise row_error(row, "prompt_ids", problem, fix)
    if not isinstance(completion_ids, (list, tuple)) or len(completion_ids) < 2:
        raise row_error(row, "completion_ids", f"expected at least 2 completions, got {completion_ids!r:.80}.", fix)
    for i, ids in enumerate(completion_ids):
        if not is_ids(ids) or not ids:
            raise row_error(
                row, f"completion_ids[{i}]", f"expected a non-empty list of token ids, got {ids!r:.80}.", fix
            )
    rewards = example.get("rewards")
    if not isinstance(rewards, (list, tuple)) or len(rewards) != len(completion_ids):
        raise row_error(row, "rewards", f"expected {len(completion_ids)} rewards, got {rewards!r:.80}.", fix)
    for i, reward in enumerate(rewards):
        check_finite(reward, row, "rewards", i)


def select_completions(rewards: list[float], max_completions: int | None) -> list[int]:
    """Indices of the completions kept for a prompt, in their original order.

    All of them when there are at most `max_completions`; otherwise the best, the worst and completions at evenly
    spaced reward ranks in between (ties broken by position), so the ranking still spans the reward range.
    """
    if max_completions is None or len(rewards) <= max_completions:
        return list(range(len(rewards)))
    by_rank = sorted(range(len(rewards)), key=lambda i: (-rewards[i], i))
    last, steps = len(rewards) - 1, max_completions - 1
    ranks = [(2 * j * last + steps) // (2 * steps) for j in range(max_completions)]  # round(j * last / steps)
    return sorted(by_rank[r] for r in ranks)


def tokenize_row(
    example: dict[str, Any], row: int, tokenizer, max_length: int | None, max_completions: int | None
) -> dict[str, Any]:
    """Tokenize one validated row into `prompt_ids`, `completion_ids` and (selected) `rewards`.

    The prompt is shared by all completions: it is the longest token prefix that every tokenized prompt+completion
    agrees on, as in TRL's DPOTrainer. Completions longer than `max_length` minus the prompt are truncated at the end.
    """
    keep = select_completions(list(example["rewards"]), max_completions)
    completions = [example["completions"][i] for i in keep]
    splits = [tokenize_prompt_completion(tokenizer, example["prompt"], c) for c in completions]
    shared = min(len(prompt_ids) for prompt_ids, _ in splits)
    if shared == 0:
        raise row_error(
            row,
            "prompt",
            f"tokenizes to no token before the completions ({example['prompt']!r:.80} and a tokenizer that adds no "
            "BOS token), so the first token of each completion could not be scored: the model predicts a token from "
            "the ones before it.",
            "Give the row a non-empty prompt, or use a tokenizer that starts every sequence with a BOS token.",
        )
    prompt_ids = splits[0][0][:shared]
    completion_ids = [prompt[shared:] + completion for prompt, completion in splits]
    if max_length is not None:
        room = max_length - len(prompt_ids)
        if room < 1:
            raise row_error(
                row,
                "prompt",
                f"is {len(prompt_ids)} tokens long, which leaves no room for a completion under "
                f"max_length={max_length}.",
                "Increase `max_length` in RRHFConfig or shorten/drop the prompt.",
            )
        completion_ids = [ids[:room] for ids in completion_ids]
    return {
        "prompt_ids": prompt_ids,
        "completion_ids": completion_ids,
        "rewards": [float(example["rewards"][i]) for i in keep],
    }


@dataclass
class DataCollatorForRRHF(DataCollatorMixin):
    """Pads a batch of tokenized RRHF rows into one tensor of all their completions.

    Each example holds `prompt_ids`, `completion_ids` (one list per completion) and `rewards`. Every completion
    becomes a row `prompt_ids + completion_ids[i]`, right-padded. The output holds:

    - `num_completions` (`(num_prompts,)`): completions per prompt;
    - `input_ids`, `attention_mask` (`(num_completions, seq_len)`);
    - `completion_mask` (`(num_completions, seq_len)`): 1 on the completion tokens that are scored;
    - `rewards` (`(num_completions,)`) and `group_ids` (`(num_completions,)`, the prompt index of each row).

    `num_completions` comes first so that the trainer's evaluation loop counts prompts as its batch size.

    Args:
        pad_token_id (`int`):
            Token id used for padding.
        pad_to_multiple_of (`int`, *optional*):
            If set, sequences are padded to a multiple of this value.
        return_tensors (`str`, *optional*, defaults to `"pt"`):
            Only `"pt"` is supported.

    Example:
    ```python
    >>> collator = DataCollatorForRRHF(pad_token_id=0)
    >>> batch = collator([{"prompt_ids": [5, 6], "completion_ids": [[7, 2], [8]], "rewards": [1.0, 0.0]}])
    >>> batch["input_ids"]
    tensor([[5, 6, 7, 2],
            [5, 6, 8, 0]])
    >>> batch["completion_mask"]
    tensor([[0, 0, 1, 1],
            [0, 0, 1, 0]])
    ```
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences, completion_masks, rewards, group_ids, counts = [], [], [], [], []
        for group, example in enumerate(examples):
            prompt_ids = list(example["prompt_ids"])
            counts.append(len(example["completion_ids"]))
            for completion_ids, reward in zip(example["completion_ids"], example["rewards"], strict=True):
                sequences.append(torch.tensor(prompt_ids + list(completion_ids)))
                completion_masks.append(torch.tensor([0] * len(prompt_ids) + [1] * len(completion_ids)))
                rewards.append(float(reward))
                group_ids.append(group)
        attention_masks = [torch.ones_like(ids) for ids in sequences]
        return {
            "num_completions": torch.tensor(counts),
            "input_ids": pad(sequences, self.pad_token_id, "right", self.pad_to_multiple_of),
            "attention_mask": pad(attention_masks, 0, "right", self.pad_to_multiple_of),
            "completion_mask": pad(completion_masks, 0, "right", self.pad_to_multiple_of),
            "rewards": torch.tensor(rewards, dtype=torch.float32),
            "group_ids": torch.tensor(group_ids),
        }

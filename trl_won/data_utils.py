"""Prompt/completion handling shared by every method, in TRL's two dataset formats.

- Standard: a prompt is a string and a completion is a string.
- Conversational: a prompt is a list of messages (`{"role", "content"}`) and a completion is a list of assistant
  messages; the tokenizer's chat template renders them.
"""

import math
from collections.abc import Sequence
from typing import Any

from trl.data_utils import is_conversational as _trl_is_conversational


Prompt = str | list[dict[str, Any]]
Completion = str | list[dict[str, Any]]


class DatasetFormatError(ValueError):
    """A dataset row does not have the shape a method needs. The message names the row, the column and the fix."""


def row_error(row: int | None, column: str | None, problem: str, fix: str) -> DatasetFormatError:
    """Build a [`DatasetFormatError`] whose message names where the problem is and how to fix it."""
    where = []
    if row is not None:
        where.append(f"row {row}")
    if column is not None:
        where.append(f"column '{column}'")
    location = ", ".join(where)
    return DatasetFormatError(f"{location}: {problem} {fix}" if location else f"{problem} {fix}")


def is_conversational_prompt(prompt: Prompt) -> bool:
    """Whether `prompt` is a list of chat messages rather than plain text."""
    return _trl_is_conversational({"prompt": prompt}) if isinstance(prompt, list) and prompt else False


def require_columns(column_names: Sequence[str], required: Sequence[str], dataset_name: str, fix: str) -> None:
    """Raise a [`DatasetFormatError`] listing the `required` columns missing from `column_names`."""
    missing = [c for c in required if c not in column_names]
    if missing:
        raise DatasetFormatError(
            f"The {dataset_name} dataset has no column {', '.join(repr(c) for c in missing)} "
            f"(it has {list(column_names)}). {fix}"
        )


def check_finite(value: Any, row: int, column: str, index: int | None = None) -> float:
    """Return `value` as a float, or raise naming the row/column if it is not a finite number."""
    where = f"{column}[{index}]" if index is not None else column
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise row_error(row, where, f"expected a number, got {value!r}.", "Give every completion a numeric reward.")
    if not math.isfinite(value):
        raise row_error(
            row, where, f"the reward is {value}.", "Remove the row or replace the reward by a finite number."
        )
    return float(value)


def completion_text(completion: Completion) -> str:
    """The text of a completion: the string itself, or the concatenated contents of its messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content", "")) for message in completion)


def prompt_for_generation(tokenizer, prompt: Prompt, **chat_template_kwargs) -> str:
    """The text a causal LM continues to answer `prompt`: the chat template with a generation prompt, or the prompt."""
    if is_conversational_prompt(prompt):
        return tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=False, **chat_template_kwargs
        )
    return prompt


def decode_continuation(tokenizer, prompt_ids: Sequence[int], completion_ids: Sequence[int], context: int = 16) -> str:
    """The text that `completion_ids` add after `prompt_ids`, special tokens removed.

    Decoding the new tokens alone loses text with some tokenizers: SentencePiece (Llama-2) strips the leading space of
    a decoded string, so a sampled "▁Paris" would come back as "Paris" and `prompt + completion` would no longer be
    what was sampled. The new tokens are decoded after the last `context` prompt tokens, and the context's own text
    is cut off.
    """
    tail = list(prompt_ids)[-context:] if context else []
    before = tokenizer.decode(tail, skip_special_tokens=True)
    after = tokenizer.decode(tail + list(completion_ids), skip_special_tokens=True)
    if after.startswith(before):
        return after[len(before) :]
    return tokenizer.decode(list(completion_ids), skip_special_tokens=True)


def chat_turn_end_token_ids(tokenizer, **chat_template_kwargs) -> set[int]:
    """The special token the chat template writes right after an assistant message (Qwen's `<|im_end|>`), if any.

    A model that ends its turn with that token but whose generation config and tokenizer name another EOS (a base
    model with a chat template, or a model built from a config) would otherwise write past the end of its turn.
    Returns an empty set for a tokenizer without a chat template, or one that ends turns with plain text.
    """
    if not getattr(tokenizer, "chat_template", None):
        return set()
    sentinel = "trl_won_turn_end_probe"
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": sentinel}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, **chat_template_kwargs)
    except Exception:  # a template that rejects this conversation: no extra stop token
        return set()
    if sentinel not in text:
        return set()
    suffix = text[text.rindex(sentinel) + len(sentinel) :]
    special = set(tokenizer.all_special_ids)
    special |= {i for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special}
    for token_id in tokenizer(text=suffix, add_special_tokens=False)["input_ids"]:
        if token_id in special:
            return {token_id}
    return set()


def as_completion(prompt: Prompt, text: str) -> Completion:
    """Wrap generated `text` in the same format as `prompt`: a string, or a one-message assistant turn."""
    if is_conversational_prompt(prompt):
        return [{"role": "assistant", "content": text}]
    return text


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_prompt_completion(
    tokenizer, prompt: Prompt, completion: Completion, **chat_template_kwargs
) -> tuple[list[int], list[int]]:
    """Tokenize a prompt and one of its completions following TRL's prompt-completion convention.

    The sequence is prompt ids, then completion ids, then EOS. For the standard format the EOS token is appended unless
    the completion already ends with it; for the conversational format the chat template closes the assistant turn.
    The completion starts where the tokenized prompt and the tokenized prompt+completion diverge, so that a token that
    merges across the boundary is counted once, in the completion.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Tokenizer; for conversational data it must have a chat template.
        prompt (`str` or `list[dict]`):
            The prompt.
        completion (`str` or `list[dict]`):
            The completion, in the same format as the prompt.
        **chat_template_kwargs:
            Forwarded to `apply_chat_template`.

    Returns:
        `tuple[list[int], list[int]]`: The prompt ids and the completion ids (EOS included).
    """
    if is_conversational_prompt(prompt):
        if isinstance(completion, str):
            raise TypeError("A conversational prompt needs a conversational completion (a list of messages).")
        prompt_ids = _chat_ids(tokenizer, prompt, add_generation_prompt=True, **chat_template_kwargs)
        full_ids = _chat_ids(tokenizer, prompt + completion, **chat_template_kwargs)
    else:
        if not isinstance(completion, str):
            raise TypeError("A standard (string) prompt needs a string completion.")
        prompt_ids = tokenizer(text=prompt)["input_ids"]
        full_ids = tokenizer(text=prompt + completion)["input_ids"]
        if tokenizer.eos_token_id is not None and (not full_ids or full_ids[-1] != tokenizer.eos_token_id):
            full_ids = full_ids + [tokenizer.eos_token_id]
    split = _common_prefix_length(prompt_ids, full_ids)
    return list(full_ids[:split]), list(full_ids[split:])


def _chat_ids(tokenizer, messages: list[dict], **kwargs) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def tokenize_for_reward_model(tokenizer, prompt: Prompt, completion: Completion, **chat_template_kwargs) -> list[int]:
    """Token ids a sequence-classification reward model scores, exactly as TRL's `RewardTrainer` tokenizes its data.

    Conversational data goes through the chat template. Standard data is `prompt + completion` followed by the EOS
    token, which `RewardTrainer` appends to every chosen/rejected text before training.
    """
    if is_conversational_prompt(prompt):
        return _chat_ids(tokenizer, prompt + list(completion), **chat_template_kwargs)
    text = prompt + completion
    eos = tokenizer.eos_token
    if eos and not text.endswith(eos):
        text += eos
    return list(tokenizer(text=text)["input_ids"])

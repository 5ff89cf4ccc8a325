"""Scoring completions with reward models and reward functions.

Reward functions follow TRL's GRPO signature, `func(prompts=..., completions=..., completion_ids=..., **kwargs)
-> list[float]`; a function that declares fewer parameters (for instance `f(prompts, completions)`) gets only those.
Async functions are awaited. A sequence-classification reward model (object or path) is wrapped in a
[`RewardModelScorer`], which is itself such a function.
"""

import asyncio
import copy
import inspect
import json
import logging
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache
from trl.trainer.utils import get_callable_name, pad

from .data_utils import Completion, Prompt, as_real, tokenize_for_reward_model
from .errors import TrlWonError
from .generation import eval_mode, prompt_sharing_unsupported
from .models import load_reward_model, load_tokenizer, weights_digest
from .utils import run_coroutine


logger = logging.getLogger(__name__)


class RewardModelScorer:
    """Score `(prompt, completion)` pairs with a sequence-classification reward model.

    Sequences are tokenized as TRL's `RewardTrainer` tokenizes its training data, sorted by length and scored in
    micro-batches of similar length under `torch.inference_mode`, then returned in the input order.

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            The reward model (`num_labels=1`), or a path/hub id to load it from.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Its tokenizer; loaded from the model's path when omitted.
        batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass.
        max_length (`int`, *optional*):
            Keep only the last `max_length` tokens of longer sequences (the score is read at the last token).
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization used when loading from a path.
        model_init_kwargs (`dict`, *optional*):
            Extra `from_pretrained` arguments used when loading from a path.
        chat_template_kwargs (`dict`, *optional*):
            Extra arguments for the chat template.
        show_progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar.
        share_prompt (`bool`, *optional*, defaults to `False`):
            Score consecutive completions of the same prompt (as West-of-N sends its N responses) with the tokens they
            share pushed through the model once: see [`~RewardModelScorer.score_groups`]. Scores equal the unshared
            ones up to floating-point rounding. Models whose cache cannot be repeated are scored unshared.
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        batch_size: int = 16,
        max_length: int | None = None,
        quantization_config=None,
        model_init_kwargs: dict | None = None,
        chat_template_kwargs: dict | None = None,
        show_progress: bool = False,
        share_prompt: bool = False,
    ):
        self.model = load_reward_model(
            model,
            model_init_kwargs=model_init_kwargs,
            quantization_config=quantization_config,
            argument_name="reward model",
        )
        self.tokenizer = load_tokenizer(model, tokenizer)
        if self.model.config.get_text_config().pad_token_id is None:
            raise ValueError(
                f"The reward model {self.name!r} has no `pad_token_id` in its config, so it cannot find the last "
                "token of a padded sequence. Set `model.config.pad_token_id = tokenizer.pad_token_id` (the pad token "
                "it was trained with) before passing it."
            )
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        self.batch_size = batch_size
        self.max_length = max_length
        self.chat_template_kwargs = chat_template_kwargs or {}
        self.show_progress = show_progress
        self.share_prompt = share_prompt
        if share_prompt and (reason := prompt_sharing_unsupported(self.model)) is not None:
            logger.warning("Scoring each prompt's tokens once is not possible (%s); scoring them unshared.", reason)
            self.share_prompt = False
        self.__name__ = self.name

    @property
    def name(self) -> str:
        return (
            (getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__).rstrip("/").split("/")[-1]
        )

    def tokenize(self, prompts: Sequence[Prompt], completions: Sequence[Completion]) -> list[list[int]]:
        ids = [
            tokenize_for_reward_model(self.tokenizer, p, c, **self.chat_template_kwargs)
            for p, c in zip(prompts, completions, strict=True)
        ]
        if self.max_length is not None:
            ids = [x[-self.max_length :] for x in ids]
        return ids

    def score_ids(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Scores of already tokenized sequences, in their given order."""
        device = next(self.model.parameters()).device
        pad_id = self.model.config.get_text_config().pad_token_id
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        scores = [0.0] * len(sequences)
        progress = tqdm(total=len(sequences), desc="Scoring", unit="seq", disable=not self.show_progress)
        with eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                rows = [torch.tensor(sequences[i], dtype=torch.long) for i in batch]
                input_ids = pad(rows, pad_id)
                attention_mask = pad([torch.ones_like(r) for r in rows], 0)
                logits = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
                for row, i in enumerate(batch):
                    scores[i] = float(logits[row, 0])
                progress.update(len(batch))
        progress.close()
        return scores

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs) -> list[float]:
        sequences = self.tokenize(prompts, completions)
        if not self.share_prompt:
            return self.score_ids(sequences)
        groups, start = [], 0  # runs of consecutive completions of one prompt
        for i in range(1, len(prompts) + 1):
            if i == len(prompts) or prompts[i] != prompts[start]:
                groups.append(range(start, i))
                start = i
        return self.score_groups(sequences, groups)

    def score_groups(self, sequences: Sequence[Sequence[int]], groups: Sequence[Sequence[int]]) -> list[float]:
        """Scores of tokenized sequences, each group's common first tokens pushed through the model once.

        For a group (the completions of one prompt), the tokens every sequence starts with, up to the last scored token
        of the shortest, go through the model once; the key/value cache is repeated for the group's micro-batches
        and only the remaining tokens of each sequence are run, right-padded, at the positions they have in the full
        sequence. The score is read at the same token as in [`score_ids`] (the last non-pad token), so the scores
        equal `score_ids(sequences)` up to floating-point rounding. Groups of one sequence, or with fewer than two
        shared tokens, are scored by [`score_ids`].
        """
        scores = [0.0] * len(sequences)
        pad_id = self.model.config.get_text_config().pad_token_id
        unshared = []
        device = next(self.model.parameters()).device
        with eval_mode(self.model), torch.inference_mode():
            for group in groups:
                group = list(group)
                split = _shared_prefix_length([sequences[i] for i in group], pad_id)
                if len(group) < 2 or split < 2:
                    unshared += group
                    continue
                prefix = torch.tensor([list(sequences[group[0]][:split])], device=device)
                cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
                self.model(input_ids=prefix, attention_mask=torch.ones_like(prefix), cache=cache, use_cache=True)
                for start in range(0, len(group), self.batch_size):
                    batch = group[start : start + self.batch_size]
                    suffixes = [torch.tensor(sequences[i][split:], dtype=torch.long) for i in batch]
                    input_ids = pad(suffixes, pad_id)
                    width = input_ids.shape[1]
                    attention_mask = pad([torch.ones(split + len(s), dtype=torch.long) for s in suffixes], 0)
                    position_ids = torch.arange(split, split + width).expand(len(batch), -1)
                    batch_cache = copy.deepcopy(cache)
                    batch_cache.batch_repeat_interleave(len(batch))
                    logits = self.model(
                        input_ids=input_ids.to(device),
                        attention_mask=attention_mask.to(device),
                        position_ids=position_ids.to(device),
                        cache=batch_cache,
                        use_cache=True,
                    ).logits
                    for row, i in enumerate(batch):
                        scores[i] = float(logits[row, 0])
        if unshared:
            for i, score in zip(unshared, self.score_ids([sequences[i] for i in unshared]), strict=True):
                scores[i] = score
        return scores


def _shared_prefix_length(sequences: Sequence[Sequence[int]], pad_id: int) -> int:
    """How many first tokens `sequences` can share: their common prefix, stopping before the last non-pad token of
    each (the token a sequence-classification model reads the score at must be in the unshared part)."""
    limit = min(max((k for k, token in enumerate(seq) if token != pad_id), default=0) for seq in sequences)
    first = sequences[0]
    length = 0
    while length < limit and all(seq[length] == first[length] for seq in sequences):
        length += 1
    return length


def reward_func_name(func: Any) -> str:
    """A readable name for a reward function or model, for logs and error messages: TRL's (`GRPOTrainer`'s) name.

    A function's `__name__` (a `functools.partial` is named after the function it wraps), a callable object's class
    name, a [`RewardModelScorer`]'s model name (the last part of its path, as TRL names reward models).
    """
    return get_callable_name(func)


def as_reward_funcs(
    reward_funcs, reward_processing_classes=None, model_init_kwargs: dict | None = None, **scorer_kwargs
) -> list[Callable]:
    """Normalize `reward_funcs` to a list of callables, wrapping reward models (objects or paths) in scorers.

    Args:
        reward_funcs (callable, `str`, model, or a list of them):
            Reward functions and/or sequence-classification reward models.
        reward_processing_classes (tokenizer or list of tokenizers, *optional*):
            Tokenizers for the reward models, in the order of `reward_funcs` (`None` entries load the model's own).
        model_init_kwargs (`dict`, *optional*):
            `from_pretrained` arguments for reward models given as paths.
        **scorer_kwargs:
            Forwarded to [`RewardModelScorer`].
    """
    if reward_funcs is None:
        return []
    if not isinstance(reward_funcs, (list, tuple)):
        reward_funcs = [reward_funcs]
    if reward_processing_classes is None:
        reward_processing_classes = [None] * len(reward_funcs)
    elif not isinstance(reward_processing_classes, (list, tuple)):
        reward_processing_classes = [reward_processing_classes]
    if len(reward_processing_classes) != len(reward_funcs):
        raise ValueError(
            f"`reward_processing_classes` has {len(reward_processing_classes)} entries but `reward_funcs` has "
            f"{len(reward_funcs)}; give one tokenizer (or None) per reward function."
        )
    funcs = []
    for func, tokenizer in zip(reward_funcs, reward_processing_classes, strict=True):
        if isinstance(func, (str, torch.nn.Module)):
            func = RewardModelScorer(func, tokenizer, model_init_kwargs=model_init_kwargs, **scorer_kwargs)
        elif not callable(func):
            raise TypeError(
                f"Each reward function must be a callable, a reward model or a path to one; got {type(func).__name__}."
            )
        funcs.append(func)
    return funcs


def _accepted_kwargs(func: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return kwargs
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in names}


def call_reward_func(
    func: Callable, prompts: Sequence[Prompt], completions: Sequence[Completion], allow_none: bool = False, **kwargs
) -> list[float]:
    """Call one reward function and check its answer: one finite number per completion.

    Args:
        func (`Callable`):
            The reward function (sync or async).
        prompts, completions (`Sequence`):
            One entry per completion to score.
        allow_none (`bool`, *optional*, defaults to `False`):
            Accept `None` ("cannot score this one"), returned as NaN. Any other non-finite value is an error.
        **kwargs:
            Extra keyword arguments (dataset columns, `completion_ids`, ...), passed when the function accepts them.

    Raises:
        ValueError: naming the function and the offending index when the answer has the wrong length or a value that
            is not a finite number.
    """
    result = func(**_accepted_kwargs(func, {"prompts": list(prompts), "completions": list(completions), **kwargs}))
    if inspect.isawaitable(result):
        result = run_coroutine(result)
    return _checked_scores(func, result, prompts, completions, allow_none)


def _checked_scores(func, result, prompts, completions, allow_none: bool) -> list[float]:
    name = reward_func_name(func)
    result = list(result)
    if len(result) != len(completions):
        raise ValueError(
            f"The reward function {name!r} returned {len(result)} scores for {len(completions)} completions. It must "
            "return exactly one score per completion, in order."
        )
    scores = []
    for i, value in enumerate(result):
        if value is None and allow_none:
            scores.append(math.nan)
            continue
        number = as_real(value)
        if number is None or not math.isfinite(number):
            raise ValueError(
                f"The reward function {name!r} returned {value!r:.80} for completion {i} (prompt {prompts[i]!r:.80}). "
                "Every score must be a finite real number; fix the function or drop that completion."
            )
        scores.append(number)
    return scores


class RewardFunctionError(TrlWonError, RuntimeError):
    """A reward function raised, or answered with the wrong number or kind of values, while scoring a batch during
    training. The message names the function and the batch; nothing was trained on that batch."""


def rewards_per_function(
    reward_funcs: Sequence[Callable],
    prompts: Sequence[Prompt],
    completions: Sequence[Completion],
    reward_kwargs: Mapping[str, Any] | None = None,
    *,
    batch_description: str = "this batch",
) -> list[list[float]]:
    """Every reward function's scores of every completion, as TRL's `GRPOTrainer` computes them.

    Each function gets `prompts`, `completions` and `reward_kwargs` (for instance `completion_ids`, the dataset's
    other columns, `trainer_state`) as keyword arguments, or only those it declares. The extra arguments come as one
    mapping, not as `**kwargs`, so that a dataset column of any name (`batch_description`, `where`, ...) reaches the
    functions. A `None` score means "does not apply" and becomes NaN. Synchronous functions run one after the other,
    asynchronous ones concurrently on one event loop.

    Args:
        reward_funcs (`Sequence[Callable]`):
            Reward functions (see [`as_reward_funcs`]).
        prompts (`Sequence`):
            The prompt of each completion to score.
        completions (`Sequence`):
            The completions to score.
        reward_kwargs (`Mapping[str, Any]`, *optional*):
            Extra keyword arguments of the functions, one list entry per completion or any value.
        batch_description (`str`, *optional*):
            The batch, as error messages name it (e.g. "step 3, dataset rows [4, 7]").

    Returns:
        `list[list[float]]`: For each function, one score per completion (NaN for `None`).

    Raises:
        RewardFunctionError: naming the function and `batch_description`, when a function raises or returns the
            wrong number of values, or a value that is neither a finite number nor `None`.
    """
    arguments = {"prompts": list(prompts), "completions": list(completions), **(reward_kwargs or {})}
    scores: list[list[float] | None] = [None] * len(reward_funcs)
    pending = []  # (index, coroutine) of the asynchronous functions

    def fail(func, error: BaseException):
        return RewardFunctionError(
            f"The reward function {reward_func_name(func)!r} failed on {batch_description} ({len(completions)} "
            f"completions): {type(error).__name__}: {error} Nothing was trained on this batch; fix the function and "
            "resume from the last checkpoint."
        )

    for index, func in enumerate(reward_funcs):
        try:
            result = func(**_accepted_kwargs(func, arguments))
            if inspect.isawaitable(result):
                pending.append((index, result))
                continue
            scores[index] = _checked_scores(func, result, prompts, completions, allow_none=True)
        except Exception as error:
            for _, coroutine in pending:
                coroutine.close()
            raise fail(func, error) from error
    if pending:

        async def gather():
            return await asyncio.gather(*(coroutine for _, coroutine in pending), return_exceptions=True)

        for (index, _), result in zip(pending, run_coroutine(gather()), strict=True):
            func = reward_funcs[index]
            try:
                if isinstance(result, BaseException):
                    raise result
                scores[index] = _checked_scores(func, result, prompts, completions, allow_none=True)
            except Exception as error:
                raise fail(func, error) from error
    return scores


def nan_weighted_sum(scores: Sequence[Sequence[float]], reward_weights: Sequence[float] | None = None) -> list[float]:
    """Each completion's weighted sum of its functions' scores, skipping NaN ("does not apply") scores as
    `GRPOTrainer` does (`nansum`); NaN where every function returned `None`."""
    weights = list(reward_weights) if reward_weights is not None else [1.0] * len(scores)
    if len(weights) != len(scores):
        raise ValueError(
            f"`reward_weights` has {len(weights)} entries but there are {len(scores)} reward functions; give one "
            "weight per reward function."
        )
    totals = []
    for column in zip(*scores, strict=True):
        present = [weight * score for weight, score in zip(weights, column, strict=True) if not math.isnan(score)]
        totals.append(sum(present) if present else math.nan)
    return totals


def weighted_rewards(
    reward_funcs: Sequence[Callable],
    prompts: Sequence[Prompt],
    completions: Sequence[Completion],
    reward_weights: Sequence[float] | None = None,
    **kwargs,
) -> list[float]:
    """Weighted sum of several reward functions' scores for each completion (weights default to 1)."""
    if not reward_funcs:
        raise ValueError("No reward function was given.")
    weights = list(reward_weights) if reward_weights is not None else [1.0] * len(reward_funcs)
    if len(weights) != len(reward_funcs):
        raise ValueError(
            f"`reward_weights` has {len(weights)} entries but there are {len(reward_funcs)} reward functions; give "
            "one weight per reward function."
        )
    total = [0.0] * len(completions)
    for func, weight in zip(reward_funcs, weights, strict=True):
        for i, score in enumerate(call_reward_func(func, prompts, completions, **kwargs)):
            total[i] += weight * score
    return total


_SIMPLE = (int, float, str, bool, type(None))


def reward_func_identity(func) -> str | None:
    """What identifies a reward function across runs, or `None` when nothing reliable does.

    A reward model is identified by its class, its path, a digest of its weights and its tokenizer; an object with a
    `fingerprint` string (an RLAIF judge's reward function) by that; a plain function by its module, name and source,
    provided it closes over simple values only. Anything else (a callable object, a closure over a model) cannot be
    told apart from a changed version of itself, so its scores are never reused.
    """
    if isinstance(func, RewardModelScorer):
        tokenizer = getattr(func.tokenizer, "name_or_path", "")
        model = func.model
        return json.dumps(
            ["reward_model", type(model).__name__, func.name, weights_digest(model), tokenizer, func.max_length]
        )
    fingerprint = getattr(func, "fingerprint", None)
    if isinstance(fingerprint, str):
        return fingerprint
    if isinstance(func, types.FunctionType):
        captured = [cell.cell_contents for cell in func.__closure__ or ()] + list(func.__defaults__ or ())
        if all(isinstance(value, _SIMPLE) for value in captured):
            try:
                source = inspect.getsource(func)
            except (OSError, TypeError):
                return None
            return json.dumps([func.__module__, func.__qualname__, source, captured])
    return None

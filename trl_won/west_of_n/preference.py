"""One interface over the three kinds of base preference model West-of-N can label with.

- a sequence-classification reward model (object or path), scored with [`~trl_won.rewards.RewardModelScorer`];
- reward functions with TRL's GRPO signature, e.g. `f(prompts, completions) -> list[float]` (several are summed
  with `reward_weights`);
- a pairwise judge, `judge(prompts, completions_a, completions_b) -> list[float | None]`, giving P(a preferred over b)
  or `None` when it cannot say.

The first two are pointwise (one score per response, [`PointwisePreferenceModel`]); a judge is pairwise
([`PairwisePreferenceModel`]). Completions are passed in the prompt's format: strings for standard prompts, lists of
assistant messages for conversational ones.
"""

import inspect
import math
from collections.abc import Callable, Sequence

import torch

from ..data_utils import Completion, Prompt, as_real
from ..rewards import (
    RewardModelScorer,
    _run_coroutine,
    as_reward_funcs,
    reward_func_identity,
    reward_func_name,
    weighted_rewards,
)


class PointwisePreferenceModel:
    """Scores each response on its own: a reward model and/or reward functions, summed with weights.

    Args:
        reward_funcs (`list[Callable]`):
            Reward functions (a [`~trl_won.rewards.RewardModelScorer`] is one).
        reward_weights (`list[float]`, *optional*):
            One weight per function, defaults to 1 each.
    """

    pairwise = False

    def __init__(self, reward_funcs: list[Callable], reward_weights: Sequence[float] | None = None):
        if reward_weights is not None and len(reward_weights) != len(reward_funcs):
            raise ValueError(
                f"`reward_weights` has {len(reward_weights)} entries but there are {len(reward_funcs)} reward "
                "functions; give one weight per reward function."
            )
        self.reward_funcs = reward_funcs
        self.reward_weights = list(reward_weights) if reward_weights is not None else None

    def score(self, prompts: Sequence[Prompt], completions: Sequence[Completion]) -> list[float]:
        """One finite score per completion (errors name the function that returned a wrong count or a NaN)."""
        return weighted_rewards(self.reward_funcs, prompts, completions, self.reward_weights)

    def models(self) -> list[torch.nn.Module]:
        return [f.model for f in self.reward_funcs if isinstance(f, RewardModelScorer)]

    def describe(self) -> dict:
        """What identifies this model in a run's manifest."""
        return {
            "kind": "pointwise",
            "functions": [_identity(f) for f in self.reward_funcs],
            "weights": self.reward_weights,
        }


class PairwisePreferenceModel:
    """Compares two responses with a pairwise judge and checks its answers.

    Args:
        judge (`Callable`):
            `judge(prompts, completions_a, completions_b) -> list[float | None]` (sync or async): the probability that
            each completion in `completions_a` is preferred to its counterpart in `completions_b`, or `None` when the
            judge cannot say.
    """

    pairwise = True

    def __init__(self, judge: Callable):
        if not callable(judge):
            raise TypeError(
                "`judge` must be callable as judge(prompts, completions_a, completions_b), got "
                f"{type(judge).__name__}."
            )
        self.judge = judge

    @property
    def name(self) -> str:
        return reward_func_name(self.judge)

    def compare(
        self, prompts: Sequence[Prompt], completions_a: Sequence[Completion], completions_b: Sequence[Completion]
    ) -> list[float | None]:
        """P(a preferred over b) for each pair, `None` where the judge abstained."""
        result = self.judge(list(prompts), list(completions_a), list(completions_b))
        if inspect.isawaitable(result):
            result = _run_coroutine(result)
        result = list(result)
        if len(result) != len(prompts):
            raise ValueError(
                f"The judge {self.name!r} returned {len(result)} results for {len(prompts)} pairs. It must return one "
                "probability (or None) per pair, in order."
            )
        checked = []
        for i, value in enumerate(result):
            if value is not None and (as_real(value) is None or not math.isfinite(as_real(value))):
                raise ValueError(
                    f"The judge {self.name!r} returned {value!r} for pair {i}; it must return a probability in [0, 1] "
                    "or None (cannot say)."
                )
            value = None if value is None else as_real(value)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(
                    f"The judge {self.name!r} returned {value} for pair {i}, outside [0, 1]. It must return "
                    "P(completion a preferred over completion b)."
                )
            checked.append(None if value is None else float(value))
        return checked

    def models(self) -> list[torch.nn.Module]:
        return []

    def describe(self) -> dict:
        return {"kind": "pairwise", "judge": _identity(self.judge)}


def _identity(func) -> str:
    # A reward model object by its weights digest, a judge by its fingerprint, a plain function by its source; other
    # callables by their name only (changing one then needs a new `pairs_dir`, see the docs).
    identity = reward_func_identity(func)
    if identity is not None:
        return identity
    module = getattr(func, "__module__", None) or type(func).__module__
    return f"{module}.{reward_func_name(func)}"


def build_preference_model(
    reward_model=None,
    reward_funcs=None,
    judge=None,
    *,
    reward_processing_class=None,
    reward_weights: Sequence[float] | None = None,
    scoring_batch_size: int = 16,
    quantization_config=None,
    model_init_kwargs: dict | None = None,
    chat_template_kwargs: dict | None = None,
    share_prompt: bool = False,
) -> PointwisePreferenceModel | PairwisePreferenceModel:
    """Build the base preference model from exactly one of `reward_model`, `reward_funcs` and `judge`.

    Args:
        reward_model (`str` or [`~transformers.PreTrainedModel`], *optional*):
            A sequence-classification reward model (`num_labels=1`) or a path/hub id to load it from.
        reward_funcs (`Callable` or `list`, *optional*):
            One or several reward functions (reward models and paths are accepted too, as in TRL's GRPO).
        judge (`Callable`, *optional*):
            A pairwise judge.
        reward_processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Tokenizer of `reward_model`; loaded from its path when omitted.
        reward_weights (`Sequence[float]`, *optional*):
            Weights of `reward_funcs`.
        scoring_batch_size (`int`, *optional*, defaults to `16`):
            Sequences per reward-model forward pass.
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization of `reward_model` when loaded from a path.
        model_init_kwargs (`dict`, *optional*):
            `from_pretrained` arguments for `reward_model` given as a path.
        chat_template_kwargs (`dict`, *optional*):
            Extra arguments for the reward model's chat template.
        share_prompt (`bool`, *optional*, defaults to `False`):
            Reward models score the responses of one prompt with their shared first tokens run once (see
            [`~trl_won.rewards.RewardModelScorer.score_groups`]).
    """
    given = [
        name
        for name, value in (("reward_model", reward_model), ("reward_funcs", reward_funcs), ("judge", judge))
        if value is not None
    ]
    if len(given) != 1:
        raise ValueError(
            "Give exactly one base preference model: `reward_model=` (a sequence-classification reward model or its "
            "path), `reward_funcs=` (reward functions f(prompts, completions) -> list[float]) or `judge=` (a pairwise "
            f"judge judge(prompts, completions_a, completions_b) -> list[float | None]). Got {given or 'none'}."
        )
    scorer_kwargs = dict(
        batch_size=scoring_batch_size,
        model_init_kwargs=model_init_kwargs,
        chat_template_kwargs=chat_template_kwargs,
        share_prompt=share_prompt,
    )
    if judge is not None:
        if reward_weights is not None:
            raise ValueError("`reward_weights` applies to reward functions; it cannot be used with a `judge`.")
        return PairwisePreferenceModel(judge)
    if reward_model is not None:
        if isinstance(reward_model, (list, tuple)) or not isinstance(reward_model, (str, torch.nn.Module)):
            raise TypeError(
                "`reward_model` must be one sequence-classification model or a path to one, got "
                f"{type(reward_model).__name__}. Pass reward functions (or several models) as `reward_funcs=`."
            )
        scorer = RewardModelScorer(
            reward_model, reward_processing_class, quantization_config=quantization_config, **scorer_kwargs
        )
        return PointwisePreferenceModel([scorer], reward_weights)
    if quantization_config is not None:
        raise ValueError("`reward_quantization_config` applies to `reward_model=`; load quantized models yourself.")
    funcs = as_reward_funcs(reward_funcs, reward_processing_class, **scorer_kwargs)
    return PointwisePreferenceModel(funcs, reward_weights)

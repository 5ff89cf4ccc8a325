"""Settings of West-of-N synthetic preference generation, shared by the offline generator and the online collator."""

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trl import RewardConfig

from ..utils import CheckpointingOnByDefault


if TYPE_CHECKING:
    from ..generation import SamplingParams


STRATEGIES = ("west_of_n", "best_random", "naive")


@dataclass
class WestOfNConfig:
    r"""
    Configuration of West-of-N preference generation ([`WestOfNGenerator`] offline, [`WestOfNDataCollator`] online).

    For each prompt, `n` responses are sampled from the policy; the base preference model picks the best one (`chosen`)
    and the worst one (`rejected`); pairs the base model is not confident about, or whose responses are unlikely under
    the policy, are filtered out. See Pace et al., "West-of-N: Synthetic Preference Generation for Improved Reward
    Modeling" (arXiv 2401.12086).

    The field names do not overlap with [`~trl.RewardConfig`], so that both can be parsed by one
    [`~trl.TrlParser`] (`TrlParser((RewardConfig, WestOfNConfig))`).

    Parameters:
        n (`int`, *optional*, defaults to `8`):
            Number of responses sampled per prompt (at least 2). The paper uses 64 and finds the gains grow with N over
            {2, 8, 64}; 8 is a cheaper default. Must be 2 with `strategy="naive"`.
        temperature (`float`, *optional*, defaults to `0.7`):
            Sampling temperature (the paper's value). Must be > 0: greedy decoding makes the `n` responses identical.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling probability mass.
        top_k (`int`, *optional*, defaults to `0`):
            Keep only the `top_k` most likely tokens; `0` disables it.
        max_new_tokens (`int`, *optional*, defaults to `256`):
            Maximum number of tokens per response.
        generation_batch_size (`int`, *optional*, defaults to `64`):
            Sequences (prompts x `n`) per generation call. All samples of a prompt are always generated in the same
            call. Offline, it also sets how many prompts are processed and saved together (`generation_batch_size //
            n`, at least 1), which is the unit of resuming.
        sampling_seed (`int`, *optional*, defaults to `42`):
            Seed of the sampling and of the random pick of `strategy="best_random"`. Offline, the samples of a group
            of prompts depend only on this seed and the group's position, so a resumed run equals an uninterrupted one.
        share_prompt_prefill (`bool`, *optional*, defaults to `True`):
            Push each prompt through the models once rather than `n` times: the policy (`transformers` backend)
            prefills all its tokens but the last once and repeats the key/value cache for the `n` samples, and a base
            reward model runs the tokens its `n` sequences share once (offline generator). Samples and scores for a
            seed are the same as without it, up to floating-point rounding. Models whose cache cannot be repeated
            (recurrent layers, a static cache) fall back to the unshared path with a warning. vLLM always shares
            prompt prefixes.
        chat_template_kwargs (`dict[str, Any]`, *optional*):
            Extra arguments for the chat template, applied to conversational prompts.
        policy_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for `AutoModelForCausalLM.from_pretrained` when the policy is given as a path.

        strategy (`str`, *optional*, defaults to `"west_of_n"`):
            How a pair is made from a prompt's responses: `"west_of_n"` (best and worst), `"best_random"` (best and a
            random other one) or `"naive"` (two samples labeled by the base model, `n=2`). The last two are the
            paper's controls.
        scoring_batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass of the base reward model and of the policy's log-likelihood computation.
        reward_weights (`list[float]`, *optional*):
            Weights of the reward functions when several are given (defaults to 1 each).
        reward_model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for `AutoModelForSequenceClassification.from_pretrained` when the base reward model is
            given as a path.

        confidence_quantile (`float`, *optional*):
            Keep the pairs whose confidence P(chosen > rejected) is at least this quantile of the confidences of all
            generated pairs (offline), or of the last `confidence_window` pairs (online). For instance `0.5` keeps the
            more confident half. Exclusive with `confidence_threshold`.
        confidence_threshold (`float`, *optional*):
            Keep the pairs whose confidence P(chosen > rejected) is at least this value. For a pointwise base model the
            confidence is `sigmoid(r_chosen - r_rejected)`; for a pairwise judge it is the judge's probability.
        confidence_window (`int`, *optional*, defaults to `1024`):
            Online only: number of most recent pair confidences over which `confidence_quantile` is computed.
        min_logp (`float`, *optional*):
            Keep only pairs whose two responses have a per-token mean log-likelihood under the policy of at least this.
        max_logp (`float`, *optional*):
            Keep only pairs whose two responses have a per-token mean log-likelihood under the policy of at most this.

        pairs_dir (`str`, *optional*, defaults to `"west_of_n_pairs"`):
            Directory the offline generator writes to as it goes (shards, manifest, summary, final dataset). A rerun
            with the same arguments resumes there.
        keep_candidates (`bool`, *optional*, defaults to `False`):
            Also output every prompt's responses and base-model scores as `completions` and `rewards`, the RRHF
            dataset format. Needs a pointwise base model (reward model or reward functions).
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar (main process only).

        use_vllm (`bool`, *optional*, defaults to `False`):
            Sample with vLLM instead of `transformers` (needs `pip install vllm` and a GPU; the policy must be a path
            or hub id). The log-likelihoods then come from vLLM too.
        vllm_gpu_memory_utilization (`float`, *optional*, defaults to `0.5`):
            Fraction of GPU memory vLLM may use; the rest stays for the reward model (and, online, the student).
        vllm_kwargs (`dict[str, Any]`, *optional*):
            Extra keyword arguments for `vllm.LLM`.
    """

    _DICT_FIELDS = ("chat_template_kwargs", "policy_init_kwargs", "reward_model_init_kwargs", "vllm_kwargs")

    # Sampling
    n: int = field(default=8, metadata={"help": "Number of responses sampled per prompt (at least 2)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling probability mass."})
    top_k: int = field(default=0, metadata={"help": "Keep only the top_k most likely tokens; 0 disables it."})
    max_new_tokens: int = field(default=256, metadata={"help": "Maximum number of tokens per response."})
    generation_batch_size: int = field(
        default=64,
        metadata={
            "help": "Sequences (prompts x n) per generation call. Offline, also the number of prompts saved together "
            "(generation_batch_size // n), the unit of resuming."
        },
    )
    sampling_seed: int = field(
        default=42, metadata={"help": "Seed of the sampling and of the random pick of strategy='best_random'."}
    )
    share_prompt_prefill: bool = field(
        default=True,
        metadata={
            "help": "Prefill each prompt once for its n samples (policy) and score the n responses with their "
            "shared prompt tokens run once (reward model), instead of n times. Same samples and scores for a seed, "
            "up to floating-point rounding."
        },
    )
    chat_template_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Extra arguments for the chat template."}
    )
    policy_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for `from_pretrained` when the policy is given as a path."},
    )

    # Scoring and selection
    strategy: str = field(
        default="west_of_n",
        metadata={
            "help": "How a pair is made from a prompt's responses.",
            "choices": list(STRATEGIES),
        },
    )
    scoring_batch_size: int = field(
        default=16,
        metadata={"help": "Sequences per forward pass of the base reward model and of the policy log-likelihoods."},
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weights of the reward functions when several are given."}
    )
    reward_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for `from_pretrained` when the base reward model is given as a path."},
    )

    # Filtering
    confidence_quantile: float | None = field(
        default=None,
        metadata={
            "help": "Keep pairs whose confidence is at least this quantile of the generated pairs' confidences "
            "(online: of the last confidence_window pairs). Exclusive with confidence_threshold."
        },
    )
    confidence_threshold: float | None = field(
        default=None, metadata={"help": "Keep pairs whose confidence P(chosen > rejected) is at least this value."}
    )
    confidence_window: int = field(
        default=1024,
        metadata={"help": "Online only: number of recent pair confidences the running quantile is computed over."},
    )
    min_logp: float | None = field(
        default=None,
        metadata={"help": "Lower bound on each response's per-token mean log-likelihood under the policy."},
    )
    max_logp: float | None = field(
        default=None,
        metadata={"help": "Upper bound on each response's per-token mean log-likelihood under the policy."},
    )

    # Offline output
    pairs_dir: str = field(
        default="west_of_n_pairs",
        metadata={"help": "Directory the offline generator writes to as it goes; a rerun resumes there."},
    )
    keep_candidates: bool = field(
        default=False,
        metadata={"help": "Also output all responses and scores as `completions` and `rewards` (RRHF format)."},
    )
    show_progress: bool = field(default=True, metadata={"help": "Show a progress bar (main process only)."})

    # vLLM
    use_vllm: bool = field(default=False, metadata={"help": "Sample with vLLM (GPU, `pip install vllm`)."})
    vllm_gpu_memory_utilization: float = field(default=0.5, metadata={"help": "Fraction of GPU memory vLLM may use."})
    vllm_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Extra keyword arguments for `vllm.LLM`."}
    )

    _INT_FIELDS = (
        "n",
        "top_k",
        "max_new_tokens",
        "generation_batch_size",
        "scoring_batch_size",
        "sampling_seed",
        "confidence_window",
    )
    _FLOAT_FIELDS = ("temperature", "top_p", "vllm_gpu_memory_utilization")
    _OPTIONAL_FLOAT_FIELDS = ("confidence_quantile", "confidence_threshold", "min_logp", "max_logp")
    _BOOL_FIELDS = ("share_prompt_prefill", "keep_candidates", "show_progress", "use_vllm")

    def __post_init__(self):
        for name in self._DICT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):  # from the command line
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as error:
                    raise ValueError(f"`{name}` must be a JSON object, got {value!r} ({error}).") from None
                setattr(self, name, value)
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"`{name}` must be a dict (or a JSON object string), got {type(value).__name__}.")
        for name in self._INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}.")
            setattr(self, name, int(value))  # numpy integers too
        for name in self._FLOAT_FIELDS + self._OPTIONAL_FLOAT_FIELDS:
            value = getattr(self, name)
            if value is None and name in self._OPTIONAL_FLOAT_FIELDS:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"`{name}` must be a number, got {type(value).__name__} {value!r}.")
            if not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
            setattr(self, name, float(value) if not isinstance(value, int) else value)
        for name in self._BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be True or False, got {type(value).__name__} {value!r}.")
        if isinstance(self.pairs_dir, os.PathLike):
            self.pairs_dir = os.fspath(self.pairs_dir)
        if not isinstance(self.pairs_dir, str) or not self.pairs_dir.strip():
            raise ValueError(
                f"`pairs_dir` must be a directory path, got {self.pairs_dir!r} (an empty path would write into the "
                "current directory)."
            )
        if self.reward_weights is not None:
            if isinstance(self.reward_weights, (str, bytes)) or not isinstance(self.reward_weights, (list, tuple)):
                raise TypeError(f"`reward_weights` must be a list of numbers, got {self.reward_weights!r}.")
            for k, weight in enumerate(self.reward_weights):
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                    raise ValueError(f"`reward_weights[{k}]` must be a finite number, got {weight!r}.")
        if not isinstance(self.strategy, str):
            raise TypeError(f"`strategy` must be one of {', '.join(map(repr, STRATEGIES))}, got {self.strategy!r}.")
        _check(self.n >= 2, "n", self.n, "must be >= 2: a pair needs at least two responses per prompt")
        _check(
            self.strategy in STRATEGIES,
            "strategy",
            self.strategy,
            f"must be one of {', '.join(map(repr, STRATEGIES))}",
        )
        _check(
            self.strategy != "naive" or self.n == 2,
            "n",
            self.n,
            "must be 2 with strategy='naive' (naive self-training labels two samples); set n=2",
        )
        _check(
            self.temperature > 0,
            "temperature",
            self.temperature,
            "must be > 0: greedy decoding would make all n responses identical",
        )
        _check(0 < self.top_p <= 1, "top_p", self.top_p, "must be in (0, 1]")
        _check(self.top_k >= 0, "top_k", self.top_k, "must be >= 0 (0 disables it)")
        _check(self.max_new_tokens >= 1, "max_new_tokens", self.max_new_tokens, "must be >= 1")
        _check(self.generation_batch_size >= 1, "generation_batch_size", self.generation_batch_size, "must be >= 1")
        _check(self.scoring_batch_size >= 1, "scoring_batch_size", self.scoring_batch_size, "must be >= 1")
        _check(self.confidence_window >= 1, "confidence_window", self.confidence_window, "must be >= 1")
        if self.confidence_quantile is not None and self.confidence_threshold is not None:
            raise ValueError(
                "Set only one of `confidence_quantile` (relative to the generated pairs) and `confidence_threshold` "
                f"(absolute), got {self.confidence_quantile} and {self.confidence_threshold}."
            )
        if self.confidence_quantile is not None:
            _check(
                0 <= self.confidence_quantile <= 1,
                "confidence_quantile",
                self.confidence_quantile,
                "must be in [0, 1]",
            )
        if self.confidence_threshold is not None:
            _check(
                0 <= self.confidence_threshold <= 1,
                "confidence_threshold",
                self.confidence_threshold,
                "must be a probability in [0, 1]",
            )
        for name in ("min_logp", "max_logp"):
            value = getattr(self, name)
            if value is not None:
                _check(value <= 0, name, value, "must be <= 0 (it bounds a mean log-probability)")
        if self.min_logp is not None and self.max_logp is not None and self.min_logp > self.max_logp:
            raise ValueError(f"`min_logp` ({self.min_logp}) must be <= `max_logp` ({self.max_logp}).")
        _check(
            0 < self.vllm_gpu_memory_utilization <= 1,
            "vllm_gpu_memory_utilization",
            self.vllm_gpu_memory_utilization,
            "must be in (0, 1]",
        )

    @property
    def sampling_params(self) -> "SamplingParams":
        """The sampling settings as [`~trl_won.generation.SamplingParams`]."""
        from ..generation import SamplingParams  # imported here: `trl-won west-of-n --help` needs only the config

        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, max_new_tokens=self.max_new_tokens
        )

    @property
    def prompts_per_chunk(self) -> int:
        """Prompts sampled in one generation call, and (offline) processed and saved together."""
        return max(1, self.generation_batch_size // self.n)

    @property
    def filters_pairs(self) -> bool:
        """Whether any filter is set."""
        return any(
            value is not None
            for value in (self.confidence_quantile, self.confidence_threshold, self.min_logp, self.max_logp)
        )


def _check(condition: bool, name: str, value, requirement: str) -> None:
    if not condition:
        raise ValueError(f"`{name}` {requirement}, got {value!r}.")


@dataclass
class StudentRewardConfig(CheckpointingOnByDefault, RewardConfig):
    """TRL's [`~trl.RewardConfig`] for a West-of-N student, with activation checkpointing on by default under
    transformers' current name `activation_checkpointing` (TRL sets it under the deprecated `gradient_checkpointing`,
    which makes transformers warn). `trl-won west-of-n --train_student` trains with it, and [`iterative_west_of_n`]
    when no `reward_args` are given."""

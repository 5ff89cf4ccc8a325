"""The West-of-N step shared by the offline generator and the online collator: sample, score, select, measure.

For a group of prompts: sample `n` responses per prompt (one batched generation call per group), score them with the
base preference model (one length-bucketed scoring pass for the whole group, or a knockout tournament batched across
the group's prompts for a judge), pick each prompt's pair, and compute the per-token mean log-likelihood of the two
picked responses under the policy. Filtering is left to the caller (offline it needs all pairs, online a window).

[`build_pipeline`] builds the step from the arguments the generator and the collator take: the sampler with
[`build_sampler`], the base model with [`~trl_won.west_of_n.preference.build_preference_model`].
[`describe_policy`] names the policy in an offline run's manifest.
"""

import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from transformers import AutoModelForCausalLM

from ..data_utils import Prompt, as_completion
from ..identity import weights_digest
from ..models import load_model, load_tokenizer, with_device_map
from ..utils import derived_seed
from .config import WestOfNConfig
from .preference import (
    PairwisePreferenceModel,
    PointwisePreferenceModel,
    build_preference_model,
    select_from_scores,
    select_with_judge,
)
from .results import PromptResult, Selection
from .sampling import TransformersSampler, VLLMSampler


@dataclass
class Timings:
    """Seconds spent in each stage, accumulated over calls."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - start
        return now

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def share_outside(self, stage: str = "generation") -> float:
        return 1.0 - self.seconds.get(stage, 0.0) / self.total if self.total else 0.0


def process_state() -> PartialState:
    """This process's place in a distributed run (`accelerate launch`), CPU-only runs included."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


class WestOfNPipeline:
    """Sample, score, select and measure the likelihood of the pair, for a group of prompts.

    Args:
        sampler ([`TransformersSampler`] or [`VLLMSampler`]):
            The generation backend.
        preference ([`PointwisePreferenceModel`] or [`PairwisePreferenceModel`]):
            The base preference model.
        args ([`WestOfNConfig`]):
            The settings (`n`, `strategy`, `sampling_seed`).
    """

    def __init__(self, sampler, preference: PointwisePreferenceModel | PairwisePreferenceModel, args: WestOfNConfig):
        self.sampler = sampler
        self.preference = preference
        self.args = args
        self.timings = Timings()

    def __call__(self, prompts: Sequence[Prompt], indices: Sequence[int], seed: int) -> list[PromptResult]:
        """Run the step on `prompts` (whose dataset positions are `indices`), sampling with `seed`."""
        prompts, indices = list(prompts), list(indices)
        start = time.perf_counter()
        samples = self.sampler.sample(prompts, self.args.n, seed, indices)
        start = self.timings.add("generation", start)
        completions = [[as_completion(p, s.text) for s in row] for p, row in zip(prompts, samples, strict=True)]
        results = [
            PromptResult(index=i, prompt=p, completions=[s.text for s in row], finished=[s.finished for s in row])
            for i, p, row in zip(indices, prompts, samples, strict=True)
        ]
        rngs = [random.Random(derived_seed(self.args.sampling_seed, i)) for i in indices]
        if self.preference.pairwise:
            selections = self._judge(prompts, completions, results, rngs)
            start = self.timings.add("scoring", start)
        else:
            flat_prompts = [p for p, row in zip(prompts, completions, strict=True) for _ in row]
            flat = self.preference.score(flat_prompts, [c for row in completions for c in row])
            start = self.timings.add("scoring", start)
            selections = []
            for k, result in enumerate(results):
                result.scores = flat[k * self.args.n : (k + 1) * self.args.n]
                selections.append(select_from_scores(result.scores, self.args.strategy, rngs[k]))
            start = self.timings.add("selection", start)
        for result, selection in zip(results, selections, strict=True):
            _apply_selection(result, selection)
        pairs = [(k, r) for k, r in enumerate(results) if r.is_pair]
        if pairs:
            picked = [samples[k][r.chosen] for k, r in pairs] + [samples[k][r.rejected] for k, r in pairs]
            logps = self.sampler.mean_logprobs([prompts[k] for k, _ in pairs] * 2, picked)
            for j, (_, result) in enumerate(pairs):
                result.chosen_logp, result.rejected_logp = logps[j], logps[len(pairs) + j]
        self.timings.add("likelihood", start)
        return results

    def _judge(self, prompts, completions, results, rngs) -> list[Selection]:
        def compare(requests):
            return self.preference.compare(
                [prompts[k] for k, _, _ in requests],
                [completions[k][a] for k, a, _ in requests],
                [completions[k][b] for k, _, b in requests],
            )

        selections, tournaments = select_with_judge([len(c) for c in completions], compare, self.args.strategy, rngs)
        for result, tournament in zip(results, tournaments, strict=True):
            result.comparisons = [[a, b, p] for (a, b), p in tournament.results.items()]
        return selections


def _apply_selection(result: PromptResult, selection: Selection) -> None:
    result.reason = selection.reason
    if not selection.is_pair:
        return
    result.chosen, result.rejected, result.confidence = selection.chosen, selection.rejected, selection.confidence
    if result.scores is not None:
        result.chosen_score, result.rejected_score = result.scores[selection.chosen], result.scores[selection.rejected]
    else:  # a judge has no pointwise score: report the two sides of its direct comparison
        result.chosen_score, result.rejected_score = selection.confidence, 1.0 - selection.confidence


def build_pipeline(
    policy,
    args: WestOfNConfig,
    *,
    reward_model=None,
    reward_funcs=None,
    judge=None,
    processing_class=None,
    reward_processing_class=None,
    quantization_config=None,
    reward_quantization_config=None,
    share_prompt: bool = False,
) -> WestOfNPipeline:
    """The step for `policy` and exactly one base preference model, from the arguments [`WestOfNGenerator`] and
    [`WestOfNDataCollator`] take. The base model is built first, so its argument errors come before loading the policy.

    Args:
        share_prompt (`bool`, *optional*, defaults to `False`):
            Reward models score the responses of one prompt with their shared first tokens run once.
    """
    reward_init_kwargs = dict(args.reward_model_init_kwargs or {})
    if isinstance(reward_model, str):  # one copy per process, not split across GPUs
        reward_init_kwargs = with_device_map(reward_init_kwargs, state=process_state())
    preference = build_preference_model(
        reward_model,
        reward_funcs,
        judge,
        reward_processing_class=reward_processing_class,
        reward_weights=args.reward_weights,
        scoring_batch_size=args.scoring_batch_size,
        quantization_config=reward_quantization_config,
        model_init_kwargs=reward_init_kwargs,
        chat_template_kwargs=args.chat_template_kwargs,
        share_prompt=share_prompt,
    )
    sampler = build_sampler(policy, args, processing_class, quantization_config)
    return WestOfNPipeline(sampler, preference, args)


def build_sampler(policy, args: WestOfNConfig, processing_class=None, quantization_config=None):
    """The generation backend for `policy` (a path/hub id or a causal LM object), as `args` asks."""
    if args.use_vllm:
        if not isinstance(policy, str):
            raise ValueError(
                "With `use_vllm=True` the policy must be a path or hub id that vLLM can load, not a model object. "
                "Save the model (merge LoRA adapters first with `merge_and_unload()`) and pass its directory."
            )
        if quantization_config is not None:
            raise ValueError("`quantization_config` is for the `transformers` backend; configure vLLM's own instead.")
        return VLLMSampler(policy, load_tokenizer(policy, processing_class), args)
    init_kwargs = dict(args.policy_init_kwargs or {})
    state = process_state()
    if isinstance(policy, str):
        init_kwargs = with_device_map(init_kwargs, state=state)  # one copy per process, not split across GPUs
    model = load_model(
        policy,
        AutoModelForCausalLM,
        model_init_kwargs=init_kwargs,
        quantization_config=quantization_config,
        argument_name="policy",
    )
    tokenizer = load_tokenizer(policy if isinstance(policy, str) else model, processing_class)
    return TransformersSampler(
        model,
        tokenizer,
        args.sampling_params,
        generation_batch_size=args.generation_batch_size,
        scoring_batch_size=args.scoring_batch_size,
        chat_template_kwargs=args.chat_template_kwargs,
        share_prompt=args.share_prompt_prefill,
    )


def describe_policy(policy) -> str:
    """What identifies the policy in a run's manifest: its path or hub id, or for a model object its path and a digest
    of its weights (so that a retrained or re-adapted model is not mistaken for the one that made the pairs)."""
    if isinstance(policy, str):
        return policy
    config = getattr(policy, "config", None)
    name = getattr(config, "_name_or_path", "") or type(policy).__name__
    return f"{name}@{weights_digest(policy)}"

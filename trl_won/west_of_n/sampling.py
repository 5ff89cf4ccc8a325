"""The `transformers` generation backend: N samples per prompt in batched `generate` calls.

A sampler has two methods the pipeline uses: `sample(prompts, num_samples, seed, indices)` and
`mean_logprobs(prompts, samples)` (per-token mean log-likelihood of chosen samples under the policy). The vLLM backend
([`VLLMSampler`]) has the same two.

The log-likelihoods are recorded while sampling, from the logits `generate` computes anyway, so the likelihood filter
costs no extra forward pass. That needs the logits `generate` hands to custom processors to be the model's own, which
holds unless the policy's generation config sets a processor such as `repetition_penalty`; then (and for samples
without recorded log-probs) a teacher-forced pass over the picked responses computes them instead.
"""

import logging
import math
from collections.abc import Sequence

from ..data_utils import Prompt, is_conversational_prompt, prompt_for_generation
from ..generation import Sample, SamplingParams, prompt_sharing_unsupported, sample_completions
from .likelihood import completion_mean_logprobs


logger = logging.getLogger(__name__)


# Generation-config settings under which `generate` changes the logits before custom processors see them, with the
# values that leave them alone.
_NEUTRAL_SETTINGS = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "sequence_bias": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "forced_decoder_ids": (None,),
    "exponential_decay_length_penalty": (None,),
    "guidance_scale": (None, 1.0),
    "renormalize_logits": (None, False),
    "watermarking_config": (None,),
}


def logit_changing_settings(model) -> list[str]:
    """The generation-config settings of `model` that alter its logits inside `generate` (empty when none do)."""
    config = getattr(model, "generation_config", None)
    return [name for name, neutral in _NEUTRAL_SETTINGS.items() if getattr(config, name, None) not in neutral]


class TransformersSampler:
    """Sample with `model.generate`; score log-likelihoods with the same model.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            The policy (PEFT-wrapped and 4/8-bit quantized models work).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer.
        params ([`~trl_won.generation.SamplingParams`]):
            Sampling settings.
        generation_batch_size (`int`, *optional*, defaults to `64`):
            Sequences per `generate` call.
        scoring_batch_size (`int`, *optional*, defaults to `16`):
            Sequences per log-likelihood forward pass.
        chat_template_kwargs (`dict`, *optional*):
            Extra arguments for the chat template.
        share_prompt (`bool`, *optional*, defaults to `False`):
            Prefill each prompt once for its samples (see [`~trl_won.generation.prefill_shared_prompts`]).
    """

    def __init__(
        self,
        model,
        tokenizer,
        params: SamplingParams,
        generation_batch_size: int = 64,
        scoring_batch_size: int = 16,
        chat_template_kwargs: dict | None = None,
        share_prompt: bool = False,
    ):
        self.model = model
        self.share_prompt = share_prompt
        if share_prompt and model is not None and (reason := prompt_sharing_unsupported(model)) is not None:
            logger.warning("`share_prompt_prefill` is not possible (%s); every sample prefills its prompt.", reason)
            self.share_prompt = False
        self.tokenizer = tokenizer
        self.params = params
        self.generation_batch_size = generation_batch_size
        self.scoring_batch_size = scoring_batch_size
        self.chat_template_kwargs = chat_template_kwargs or {}
        self.record_logprobs = model is not None and not logit_changing_settings(model)

    def context_length(self) -> int | None:
        """The policy's context length (positions it was trained on) from its config, or `None` if it names none."""
        config = getattr(self.model, "config", None)
        if config is None:
            return None
        config = config.get_text_config(decoder=True)
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids exactly as [`~trl_won.generation.sample_completions`] feeds them to `generate`."""
        text = prompt_for_generation(self.tokenizer, prompt, **self.chat_template_kwargs)
        return list(self.tokenizer(text, add_special_tokens=not is_conversational_prompt(prompt))["input_ids"])

    def sample(
        self, prompts: Sequence[Prompt], num_samples: int, seed: int, indices: Sequence[int] | None = None
    ) -> list[list[Sample]]:
        """`num_samples` samples for each prompt; all of them come from generation calls seeded by `seed`."""
        return sample_completions(
            self.model,
            self.tokenizer,
            prompts,
            num_samples,
            self.params,
            batch_size=self.generation_batch_size,
            seed=seed,
            chat_template_kwargs=self.chat_template_kwargs,
            return_logprobs=self.record_logprobs,
            share_prompt=self.share_prompt,
        )

    def mean_logprobs(self, prompts: Sequence[Prompt], samples: Sequence[Sample]) -> list[float]:
        """Per-token mean log-likelihood of each sample (its own prompt at the same position) under the policy."""
        if all(s.logprobs is not None for s in samples):
            return [sum(s.logprobs) / len(s.logprobs) if s.logprobs else math.nan for s in samples]
        prompt_ids = [self.prompt_ids(p) for p in prompts]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return completion_mean_logprobs(
            self.model,
            prompt_ids,
            [s.token_ids for s in samples],
            batch_size=self.scoring_batch_size,
            pad_token_id=pad_id,
        )

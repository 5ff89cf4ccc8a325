"""The generation backends: N samples per prompt, and the per-token mean log-likelihood of the picked ones.

A sampler has two methods the pipeline uses: `sample(prompts, num_samples, seed, indices)` and
`mean_logprobs(prompts, samples)` (per-token mean log-likelihood of chosen samples under the policy), which the
likelihood filter needs.

- [`TransformersSampler`]: batched `model.generate` calls. The log-likelihoods are recorded while sampling, from the
  logits `generate` computes anyway, so the likelihood filter costs no extra forward pass. That needs the logits
  `generate` hands to custom processors to be the model's own, which holds unless the policy's generation config sets a
  processor such as `repetition_penalty`; then (and for samples without recorded log-probs)
  [`completion_mean_logprobs`] computes them with a teacher-forced pass over the picked responses. It scores the exact
  tokens that were sampled (prompt ids as fed to `generate`, then the response's token ids up to and including EOS),
  so there is no decode/re-encode round trip; sequences are sorted by length and scored in micro-batches with the
  memory-efficient selective log-probs of [`trl_won.logprobs`], under `torch.inference_mode`.
- [`VLLMSampler`] (GPU machines with `pip install vllm`; vLLM is imported only when `use_vllm=True`). Prompts are sent
  as the exact token ids the `transformers` backend would feed to `generate`; every prompt gets its own seed, derived
  from the group's seed and the prompt's index, so samples do not depend on how prompts are grouped. The per-token mean
  log-likelihood of each sample is read from vLLM's log-probabilities of the sampled tokens, so no `transformers` copy
  of the policy is needed. Those are the model's raw log-probabilities in vLLM's default
  `logprobs_mode="raw_logprobs"`; if you change that mode, the likelihood filter sees processed ones instead.
"""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from trl.trainer.utils import pad

from ..data_utils import Prompt, is_conversational_prompt, prompt_for_generation
from ..generation import Sample, SamplingParams, eval_mode, prompt_sharing_unsupported, sample_completions
from ..logprobs import sequence_logprobs
from ..utils import derived_seed
from .config import WestOfNConfig


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


def completion_mean_logprobs(
    model,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    batch_size: int = 16,
    pad_token_id: int = 0,
) -> list[float]:
    """Mean log p(token | prefix) over each completion's tokens (NaN for an empty completion).

    Args:
        model ([`~transformers.PreTrainedModel`]):
            The causal LM (PEFT-wrapped and quantized models work).
        prompt_ids (`Sequence[Sequence[int]]`):
            Token ids of each prompt.
        completion_ids (`Sequence[Sequence[int]]`):
            Token ids of each completion.
        batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass.
        pad_token_id (`int`, *optional*, defaults to `0`):
            Id used for (masked) padding.

    Returns:
        `list[float]`: One mean log-probability per completion, in the input order.
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"Got {len(prompt_ids)} prompts for {len(completion_ids)} completions.")
    device = next(model.parameters()).device
    lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    means = [math.nan] * len(lengths)
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [i for i in order[start : start + batch_size] if completion_ids[i]]
            if not batch:
                continue
            input_ids = pad(
                [torch.tensor(list(prompt_ids[i]) + list(completion_ids[i]), dtype=torch.long) for i in batch],
                padding_value=pad_token_id,
            )
            attention_mask = pad([torch.ones(lengths[i], dtype=torch.long) for i in batch])
            logprob_mask = pad(
                [
                    torch.tensor([0] * len(prompt_ids[i]) + [1] * len(completion_ids[i]), dtype=torch.long)
                    for i in batch
                ]
            )
            _, mean = sequence_logprobs(
                model, input_ids.to(device), attention_mask.to(device), logprob_mask.to(device)
            )
            for row, i in enumerate(batch):
                means[i] = float(mean[row])
    return means


# The vLLM backend


@dataclass
class SampleWithLogp(Sample):
    """A [`~trl_won.generation.Sample`] that also carries its per-token mean log-likelihood under the policy."""

    mean_logp: float = math.nan


def _import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "`use_vllm=True` needs vLLM, which is not installed. Install it on a GPU machine with "
            "`pip install trl-won[vllm]` (or `pip install vllm`), or set `use_vllm=False` to sample with transformers."
        ) from error
    return vllm


def vllm_sampling_kwargs(params: SamplingParams, num_samples: int, seed: int) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams` equivalent to `params` (and the sampled tokens' log-probs)."""
    return {
        "n": num_samples,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,  # -1 disables top-k in every vLLM version
        "max_tokens": params.max_new_tokens,
        "seed": seed,
        "logprobs": 0,  # only the sampled token's log-probability
    }


def sample_from_vllm_output(output) -> SampleWithLogp:
    """Convert one `vllm.CompletionOutput` (text, token_ids, finish_reason, logprobs) into a [`SampleWithLogp`]."""
    token_ids = list(output.token_ids)
    if getattr(output, "logprobs", None):
        values = [position[token].logprob for token, position in zip(token_ids, output.logprobs, strict=False)]
    else:
        values = []
    if values:
        mean_logp = sum(values) / len(values)
    elif getattr(output, "cumulative_logprob", None) is not None and token_ids:
        mean_logp = output.cumulative_logprob / len(token_ids)
    else:
        mean_logp = math.nan
    return SampleWithLogp(
        text=output.text, token_ids=token_ids, finished=output.finish_reason == "stop", mean_logp=mean_logp
    )


class VLLMSampler:
    """Sample `n` responses per prompt with a colocated `vllm.LLM`.

    Args:
        model (`str`):
            Path or hub id of the policy.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The policy's tokenizer (renders conversational prompts with its chat template).
        args ([`WestOfNConfig`]):
            Sampling settings, `vllm_gpu_memory_utilization` and `vllm_kwargs`.
    """

    def __init__(self, model: str, tokenizer, args: WestOfNConfig):
        vllm = _import_vllm()
        self.tokenizer = tokenizer
        self.params = args.sampling_params
        # Reuse the transformers backend's prompt rendering so both backends see the same prompt tokens.
        self._prompts = TransformersSampler(
            None, tokenizer, self.params, chat_template_kwargs=args.chat_template_kwargs
        )
        self.llm = vllm.LLM(
            model=model,
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            seed=args.sampling_seed,
            **(args.vllm_kwargs or {}),
        )
        self._vllm = vllm

    def sample(
        self, prompts: Sequence[Prompt], num_samples: int, seed: int, indices: Sequence[int] | None = None
    ) -> list[list[SampleWithLogp]]:
        indices = list(indices) if indices is not None else list(range(len(prompts)))
        requests = [{"prompt_token_ids": self._prompts.prompt_ids(p)} for p in prompts]
        sampling_params = [
            self._vllm.SamplingParams(**vllm_sampling_kwargs(self.params, num_samples, derived_seed(seed, i)))
            for i in indices
        ]
        outputs = self.llm.generate(requests, sampling_params, use_tqdm=False)
        return [[sample_from_vllm_output(o) for o in request.outputs] for request in outputs]

    def mean_logprobs(self, prompts: Sequence[Prompt], samples: Sequence[SampleWithLogp]) -> list[float]:
        return [s.mean_logp for s in samples]

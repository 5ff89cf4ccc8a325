"""The vLLM generation backend (GPU machines with `pip install vllm`; imported only when `use_vllm=True`).

Prompts are sent as the exact token ids the `transformers` backend would feed to `generate`; every prompt gets its own
seed, derived from the group's seed and the prompt's index, so samples do not depend on how prompts are grouped. The
per-token mean log-likelihood of each sample is read from vLLM's log-probabilities of the sampled tokens, so no
`transformers` copy of the policy is needed. Those are the model's raw log-probabilities in vLLM's default
`logprobs_mode="raw_logprobs"`; if you change that mode, the likelihood filter sees processed ones instead.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..data_utils import Prompt
from ..generation import Sample, SamplingParams
from .config import WestOfNConfig


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


def prompt_seed(seed: int, index: int) -> int:
    """The seed of one prompt's samples: a function of the group's seed and the prompt's index only (fits 63 bits)."""
    return (seed * 1_000_003 + index) % (2**63 - 1)


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
        from .sampling import TransformersSampler

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
            self._vllm.SamplingParams(**vllm_sampling_kwargs(self.params, num_samples, prompt_seed(seed, i)))
            for i in indices
        ]
        outputs = self.llm.generate(requests, sampling_params, use_tqdm=False)
        return [[sample_from_vllm_output(o) for o in request.outputs] for request in outputs]

    def mean_logprobs(self, prompts: Sequence[Prompt], samples: Sequence[SampleWithLogp]) -> list[float]:
        return [s.mean_logp for s in samples]

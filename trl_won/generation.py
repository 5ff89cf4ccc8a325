"""Batched sampling from a causal LM: all samples of a prompt come from one `generate` call.

Used by West-of-N (N candidates per prompt), the RLAIF labeler callback (policy samples to judge) and the demo
(Best-of-N). The model may be PEFT-wrapped, quantized, or wrapped by DDP; it is put in eval mode while sampling and
its previous mode restored afterwards. Sampling runs under its own seeded RNG so that it does not perturb the random
state of a surrounding training run.

With `share_prompt=True` each prompt is prefilled once for all its samples (see [`prefill_shared_prompts`]).
"""

import contextlib
import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from accelerate.utils import extract_model_from_parallel
from tqdm.auto import tqdm
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import LinearAttentionCacheLayerMixin

from .data_utils import (
    Prompt,
    chat_turn_end_token_ids,
    decode_continuation,
    is_conversational_prompt,
    prompt_for_generation,
)


logger = logging.getLogger(__name__)


@dataclass
class SamplingParams:
    """How to sample completions.

    Args:
        temperature (`float`, *optional*, defaults to `0.7`):
            Sampling temperature; `0` means greedy decoding.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling probability mass.
        top_k (`int`, *optional*, defaults to `0`):
            Keep only the `top_k` most likely tokens; `0` disables it.
        max_new_tokens (`int`, *optional*, defaults to `64`):
            Maximum number of tokens per completion.
        min_p (`float`, *optional*):
            Minimum token probability, scaled by the probability of the most likely token; `None` disables it.
        repetition_penalty (`float`, *optional*, defaults to `1.0`):
            Penalty on tokens already in the prompt or the completion (`1.0`: none).
        generation_kwargs (`dict`, *optional*):
            Extra `generate` arguments (e.g. `suppress_tokens`); they override the settings above where they overlap,
            as GRPO's `generation_kwargs` do.
    """

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    min_p: float | None = None
    repetition_penalty: float = 1.0
    generation_kwargs: dict | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1, got {self.max_new_tokens}.")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError(f"`min_p` must be between 0 and 1, got {self.min_p}.")
        if self.repetition_penalty <= 0:
            raise ValueError(f"`repetition_penalty` must be > 0, got {self.repetition_penalty}.")

    def generate_kwargs(self) -> dict:
        if self.temperature == 0:
            kwargs = {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        else:
            kwargs = {
                "do_sample": True,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "top_k": self.top_k,
                "max_new_tokens": self.max_new_tokens,
            }
            if self.min_p is not None:
                kwargs["min_p"] = self.min_p
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return {**kwargs, **(self.generation_kwargs or {})}


@dataclass
class Sample:
    """One sampled completion.

    Args:
        text (`str`): The decoded completion, special tokens removed.
        token_ids (`list[int]`): The completion's token ids, up to and including the first EOS.
        finished (`bool`): Whether the completion ended with EOS rather than hitting `max_new_tokens`.
        logprobs (`list[float]`, *optional*): With `return_logprobs=True`, the log-probability of each token of
            `token_ids` under the model, as `generate` saw it before the sampling warpers (temperature, top-k, top-p).
    """

    text: str
    token_ids: list[int]
    finished: bool
    logprobs: list[float] | None = None


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | None = None):
    """Run the block with torch's RNG seeded by `seed`, restoring the previous RNG state afterwards."""
    if seed is None:
        yield
        return
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def eval_mode(model):
    """Put `model` in eval mode for the block and restore its previous mode afterwards.

    A model being trained keeps its bitsandbytes 4-bit layers in training mode: on CPUs with AVX512-BF16 a 4-bit layer
    repacks its weight for inference at its first eval-mode no-grad forward and has no backward afterwards
    (bitsandbytes 0.50), which would silently stop a QLoRA run's gradients after sampling from the policy (see
    `trl_won.logprobs.deterministic_mode`). The layer has no dropout: its mode changes nothing else.
    """
    was_training = model.training
    model.eval()
    if was_training:
        for module in model.modules():
            if type(module).__name__ == "Linear4bit" and type(module).__module__.startswith("bitsandbytes"):
                module.training = True
    try:
        yield model
    finally:
        model.train(was_training)


class _SampledTokenLogprobs(LogitsProcessor):
    """A logits processor that records the log-probability of each sampled token, at no extra forward pass.

    `generate` applies custom processors before the sampling warpers, so the scores it sees are the model's logits
    (after any non-warper processor of the generation config, such as a repetition penalty). At step t the token
    sampled at step t - 1 is the last input id, so its log-probability is read from the previous step's log-softmax;
    [`finish`] reads the last one. Memory: one `(batch, vocab)` float32 tensor.
    """

    def __init__(self):
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> list[list[float]]:
        """The `(batch, new_tokens)` log-probabilities of the generated tokens, as lists."""
        if self.previous is not None:
            self.steps.append(self.previous.gather(1, sequences[:, -1:]).squeeze(1))
        if not self.steps:
            return [[] for _ in range(sequences.shape[0])]
        return torch.stack(self.steps, dim=1).tolist()


def _trim(ids: list[int], eos_ids: set[int], pad_id: int | None) -> tuple[list[int], bool]:
    for i, token in enumerate(ids):
        if token in eos_ids:
            return ids[: i + 1], True
    while ids and pad_id is not None and ids[-1] == pad_id and pad_id not in eos_ids:
        ids = ids[:-1]
    return ids, False


def prompt_ids_for_generation(tokenizer, prompt: Prompt, **chat_template_kwargs) -> list[int]:
    """The token ids [`sample_completions`] continues for `prompt` (its row of the batch, without the left padding).

    A conversational prompt is rendered by the chat template with a generation prompt and tokenized without special
    tokens (the template writes them); a standard prompt is tokenized with them (BOS).
    """
    text = prompt_for_generation(tokenizer, prompt, **chat_template_kwargs)
    return list(tokenizer(text, add_special_tokens=not is_conversational_prompt(prompt))["input_ids"])


def sample_completions(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    num_samples: int,
    params: SamplingParams | None = None,
    batch_size: int = 64,
    seed: int | None = None,
    show_progress: bool = False,
    chat_template_kwargs: dict | None = None,
    return_logprobs: bool = False,
    generate_kwargs: dict | None = None,
    share_prompt: bool = False,
    add_special_tokens: bool | None = None,
) -> list[list[Sample]]:
    """Sample `num_samples` completions for every prompt.

    Prompts are left-padded and sent `max(1, batch_size // num_samples)` at a time, each prompt's row
    repeated `num_samples` times, so a prompt's samples always come from the same batched call.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            Causal LM to sample from (PEFT, quantized and DDP-wrapped models are accepted).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer. Conversational prompts are rendered with its chat template.
        prompts (`Sequence[str | list[dict]]`):
            Prompts in standard or conversational format.
        num_samples (`int`):
            Completions per prompt.
        params ([`SamplingParams`], *optional*):
            Sampling settings.
        batch_size (`int`, *optional*, defaults to `64`):
            Sequences (prompts x samples) per `generate` call.
        seed (`int`, *optional*):
            Seed for this call's sampling; the caller's RNG state is left untouched.
        show_progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar over prompts.
        chat_template_kwargs (`dict`, *optional*):
            Extra arguments for the chat template.
        return_logprobs (`bool`, *optional*, defaults to `False`):
            Also record each sampled token's log-probability (`Sample.logprobs`), read from the logits `generate`
            computes anyway (see `_SampledTokenLogprobs`).
        generate_kwargs (`dict`, *optional*):
            Extra arguments for `model.generate` (for instance `synced_gpus=True` for a sharded model).
        share_prompt (`bool`, *optional*, defaults to `False`):
            Push each prompt through the model once for all its samples instead of once per sample: all prompt tokens
            but the last are prefilled once per prompt and the key/value cache is repeated for the samples (see
            [`prefill_shared_prompts`]). The samples for a seed are those of `share_prompt=False` up to floating-point
            rounding (the random draws are the same, in the same order). Models whose cache cannot be repeated fall
            back to the unshared path with a warning.
        add_special_tokens (`bool`, *optional*):
            Whether the tokenizer adds its special tokens (BOS) to each prompt; by default it does for standard
            prompts and not for conversational ones (their chat template writes them). Pass `False` for text prompts
            already rendered through a chat template.

    Returns:
        `list[list[Sample]]`: For each prompt, its `num_samples` samples.
    """
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
    params = params or SamplingParams()
    model = extract_model_from_parallel(model)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = _eos_token_ids(model, tokenizer)
    prompts_per_call = max(1, batch_size // num_samples)
    chat_template_kwargs = chat_template_kwargs or {}
    if share_prompt and num_samples > 1:
        reason = prompt_sharing_unsupported(model, generate_kwargs)
        if reason is not None:
            logger.warning(
                "Prefilling each prompt once is not possible (%s); every sample prefills its prompt.", reason
            )
            share_prompt = False
    if any(is_conversational_prompt(p) for p in prompts):  # stop at the end of the assistant's turn too
        eos_ids = eos_ids | chat_turn_end_token_ids(tokenizer, **chat_template_kwargs)
    results: list[list[Sample]] = []
    progress = tqdm(total=len(prompts), desc="Sampling", unit="prompt", disable=not show_progress)
    with eval_mode(model), seeded(seed, device), torch.inference_mode():
        for start in range(0, len(prompts), prompts_per_call):
            chunk = list(prompts[start : start + prompts_per_call])
            texts = [prompt_for_generation(tokenizer, p, **chat_template_kwargs) for p in chunk]
            add_special = not is_conversational_prompt(chunk[0]) if add_special_tokens is None else add_special_tokens
            encoded = tokenizer(
                texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=add_special
            ).to(device)
            cache = None
            if share_prompt and num_samples > 1:
                extra = {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")}
                cache = prefill_shared_prompts(
                    model, encoded["input_ids"], encoded["attention_mask"], num_samples, **extra
                )
            # Each prompt's row repeated `num_samples` times: what `num_return_sequences` does, but also for greedy.
            encoded = {key: value.repeat_interleave(num_samples, dim=0) for key, value in encoded.items()}
            if cache is not None:
                encoded["cache"] = cache
                # The positions the prefill used, as `generate` derives them from the mask. `generate` derives them
                # itself only when the forward's signature names `position_ids`: a patched forward (RRHF's log-prob
                # forward takes `**kwargs`) hides it, and positions counted over the left padding would not continue
                # the prefilled cache (the samples of every padded prompt would be garbage).
                mask = encoded["attention_mask"]
                encoded["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
            recorder = _SampledTokenLogprobs() if return_logprobs else None
            output = model.generate(
                **encoded,
                pad_token_id=pad_id,
                eos_token_id=sorted(eos_ids),
                logits_processor=LogitsProcessorList([recorder]) if recorder is not None else None,
                **params.generate_kwargs(),
                **(generate_kwargs or {}),
            )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            prompt_tails = [
                encoded["input_ids"][i * num_samples][encoded["attention_mask"][i * num_samples].bool()][-16:].tolist()
                for i in range(len(chunk))
            ]
            token_logprobs = recorder.finish(new_tokens) if recorder is not None else None
            new_tokens = new_tokens.tolist()
            for i in range(len(chunk)):
                samples = []
                for row in range(i * num_samples, (i + 1) * num_samples):
                    ids, finished = _trim(new_tokens[row], eos_ids, pad_id)
                    text = decode_continuation(tokenizer, prompt_tails[i], ids)
                    logprobs = token_logprobs[row][: len(ids)] if token_logprobs is not None else None
                    samples.append(Sample(text=text, token_ids=ids, finished=finished, logprobs=logprobs))
                results.append(samples)
            progress.update(len(chunk))
    progress.close()
    return results


def prompt_sharing_unsupported(model, generate_kwargs: dict | None = None) -> str | None:
    """Why [`prefill_shared_prompts`] cannot be used with `model` (and these `generate` arguments), or `None`."""
    model = extract_model_from_parallel(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    config = getattr(base, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return "an encoder-decoder model"
    supports_cache = getattr(type(base), "_supports_default_dynamic_cache", None)  # absent outside GenerationMixin
    if supports_cache is not None and not supports_cache():
        return f"{type(base).__name__} does not use transformers' DynamicCache"
    if getattr(getattr(base, "generation_config", None), "cache_implementation", None) is not None:
        return f"its generation config sets cache_implementation={base.generation_config.cache_implementation!r}"
    if (generate_kwargs or {}).get("synced_gpus"):
        return "`synced_gpus=True`: the extra prefill forward would have to be synchronized across processes"
    if "cache" not in _forward_parameters(base):
        return f"{type(base).__name__}.forward takes no `cache` argument"
    layers = DynamicCache(config=config.get_text_config(decoder=True)).layers  # empty layers: no memory yet
    if any(isinstance(layer, LinearAttentionCacheLayerMixin) for layer in layers):
        # A recurrent state summarizes the whole prefix: it cannot be stopped one token short of the prompt for
        # `generate` to continue from, and its left-padding handling differs.
        return f"{type(base).__name__} has recurrent (linear-attention/SSM) layers"
    return None


def prefill_shared_prompts(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_samples: int, **extra: torch.Tensor
) -> DynamicCache | None:
    """Prefill a left-padded prompt batch once and repeat its key/value cache for `num_samples` samples per prompt.

    All prompt tokens but the last go through the model once per prompt, and each layer's keys and values are repeated
    `num_samples` times along the batch (`repeat_interleave`, the same order as the repeated prompt rows). Passed to
    `generate` with the repeated `input_ids` and `attention_mask`, the cache makes `generate` run only the last prompt
    token, once per sample, and sample the first token from its logits: the same random draws, in the same order, as
    without the cache. Positions come from the attention mask exactly as `generate` computes them, so left padding is
    handled as in the unshared path. Other per-token tokenizer outputs (`extra`, such as `token_type_ids`) are passed
    along, cut like `input_ids`.

    Returns `None` (use the unshared path) when the prompts are one token long. Check [`prompt_sharing_unsupported`]
    first: models with recurrent (linear-attention/SSM) layers are refused.
    """
    if input_ids.shape[1] < 2:
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache = DynamicCache(config=base.config.get_text_config(decoder=True))
    if any(isinstance(layer, LinearAttentionCacheLayerMixin) for layer in cache.layers):
        raise ValueError(f"{type(base).__name__} has recurrent layers: see `prompt_sharing_unsupported`.")
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    kwargs = {"logits_to_keep": 1} if "logits_to_keep" in _forward_parameters(base) else {}
    model(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=position_ids[:, :-1],
        cache=cache,
        use_cache=True,
        **{key: value[:, :-1] for key, value in extra.items()},
        **kwargs,
    )
    cache.batch_repeat_interleave(num_samples)
    return cache


def _forward_parameters(model) -> Mapping[str, inspect.Parameter]:
    """The parameters of the model's own forward (under RRHF's log-prob forward, which passes them through)."""
    return inspect.signature(getattr(model, "_trl_won_original_forward", model.forward)).parameters


def _eos_token_ids(model, tokenizer) -> set[int]:
    ids = set()
    generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (generation_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(value)
    if not ids:
        raise ValueError("Neither the tokenizer nor the model's generation config defines an EOS token.")
    return ids

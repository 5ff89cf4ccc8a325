"""Batched sampling from a causal LM: all samples of a prompt come from one `generate` call.

Used by West-of-N (N candidates per prompt), the RLAIF labeler callback (policy samples to judge) and the demo
(Best-of-N). The model may be PEFT-wrapped, quantized, or wrapped by DDP; it is put in eval mode while sampling and
its previous mode restored afterwards. Sampling runs under its own seeded RNG so that it does not perturb the random
state of a surrounding training run.
"""

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from accelerate.utils import extract_model_from_parallel
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from .data_utils import (
    Prompt,
    chat_turn_end_token_ids,
    decode_continuation,
    is_conversational_prompt,
    prompt_for_generation,
)


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
    """

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1, got {self.max_new_tokens}.")

    def generate_kwargs(self) -> dict:
        if self.temperature == 0:
            return {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
        }


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
    """Put `model` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
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
    if any(is_conversational_prompt(p) for p in prompts):  # stop at the end of the assistant's turn too
        eos_ids = eos_ids | chat_turn_end_token_ids(tokenizer, **chat_template_kwargs)
    results: list[list[Sample]] = []
    progress = tqdm(total=len(prompts), desc="Sampling", unit="prompt", disable=not show_progress)
    with eval_mode(model), seeded(seed, device), torch.inference_mode():
        for start in range(0, len(prompts), prompts_per_call):
            chunk = list(prompts[start : start + prompts_per_call])
            texts = [prompt_for_generation(tokenizer, p, **chat_template_kwargs) for p in chunk]
            add_special = not is_conversational_prompt(chunk[0])
            encoded = tokenizer(
                texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=add_special
            ).to(device)
            # Each prompt's row repeated `num_samples` times: what `num_return_sequences` does, but also for greedy.
            encoded = {key: value.repeat_interleave(num_samples, dim=0) for key, value in encoded.items()}
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

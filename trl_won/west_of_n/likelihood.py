"""Per-token mean log-likelihood of sampled responses under the policy, for the likelihood filter.

The exact tokens that were sampled are scored (prompt ids as fed to `generate`, then the response's token ids up to and
including EOS), so there is no decode/re-encode round trip. Sequences are sorted by length and scored in micro-batches
with the memory-efficient selective log-probs of [`trl_won.logprobs`], under `torch.inference_mode`.
"""

import math
from collections.abc import Sequence

import torch

from ..generation import eval_mode
from ..logprobs import sequence_logprobs


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
            width = max(lengths[i] for i in batch)
            input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            logprob_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids = list(prompt_ids[i]) + list(completion_ids[i])
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1
                logprob_mask[row, len(prompt_ids[i]) : len(ids)] = 1
            _, mean = sequence_logprobs(
                model, input_ids.to(device), attention_mask.to(device), logprob_mask.to(device)
            )
            for row, i in enumerate(batch):
                means[i] = float(mean[row])
    return means

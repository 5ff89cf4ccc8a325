"""The RRHF loss (Yuan et al., 2023), as pure tensor-in/tensor-out functions.

A batch holds the completions of several prompts, flattened: row `n` is one completion, `group_ids[n]` says which
prompt (0..num_prompts-1) it belongs to. Prompts may have different numbers of completions. Every function returns one
value per prompt, so that a caller can average over any number of prompts, across micro-batches and processes.
"""

from dataclasses import dataclass

import torch


def length_normalized_logps(
    token_logps: torch.Tensor, completion_mask: torch.Tensor, length_penalty: float = 1.0
) -> torch.Tensor:
    """`p_i = sum_t log pi(y_i,t | x, y_i,<t) / |y_i| ** length_penalty` (paper eq. 1).

    Args:
        token_logps (`torch.Tensor` of shape `(num_completions, seq_len)`):
            Per-token log-probabilities.
        completion_mask (`torch.Tensor` of shape `(num_completions, seq_len)`):
            1 for the scored completion tokens (EOS included), 0 for prompt and padding.
        length_penalty (`float`, *optional*, defaults to `1.0`):
            Exponent of the length normalization; `0` gives the summed log-probability.

    Returns:
        `torch.Tensor` of shape `(num_completions,)`.
    """
    mask = completion_mask.to(token_logps.dtype)
    lengths = mask.sum(dim=-1)
    return (token_logps * mask).sum(dim=-1) / lengths.pow(length_penalty)


def ordered_pairs(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Boolean `(n, n)` matrix whose entry `(i, j)` says: same prompt and `r_i < r_j` (tied rewards give no pair)."""
    same_prompt = group_ids.unsqueeze(1) == group_ids.unsqueeze(0)
    return same_prompt & (rewards.unsqueeze(1) < rewards.unsqueeze(0))


def rank_loss(scores: torch.Tensor, rewards: torch.Tensor, group_ids: torch.Tensor, num_prompts: int) -> torch.Tensor:
    """Zero-margin hinge over ordered pairs: `sum_{r_i < r_j} max(0, p_i - p_j)` per prompt (paper eq. 2).

    Args:
        scores (`torch.Tensor` of shape `(n,)`): Length-normalized log-probabilities `p_i`.
        rewards (`torch.Tensor` of shape `(n,)`): Rewards `r_i`.
        group_ids (`torch.LongTensor` of shape `(n,)`): Prompt index of each completion.
        num_prompts (`int`): Number of prompts in the batch.

    Returns:
        `torch.Tensor` of shape `(num_prompts,)`.
    """
    pairs = ordered_pairs(rewards, group_ids)
    hinge = torch.relu(scores.unsqueeze(1) - scores.unsqueeze(0)) * pairs
    return scores.new_zeros(num_prompts).index_add(0, group_ids, hinge.sum(dim=1))


def best_completion_index(rewards: torch.Tensor, group_ids: torch.Tensor, num_prompts: int) -> torch.Tensor:
    """Row of each prompt's highest-reward completion; the first one in row order when several tie."""
    return _first_extreme_index(rewards, group_ids, num_prompts, largest=True)


def worst_completion_index(rewards: torch.Tensor, group_ids: torch.Tensor, num_prompts: int) -> torch.Tensor:
    """Row of each prompt's lowest-reward completion; the first one in row order when several tie."""
    return _first_extreme_index(rewards, group_ids, num_prompts, largest=False)


def _first_extreme_index(rewards, group_ids, num_prompts, largest):
    reduce = "amax" if largest else "amin"
    fill = float("-inf") if largest else float("inf")
    extreme = rewards.new_full((num_prompts,), fill).scatter_reduce(0, group_ids, rewards, reduce=reduce)
    rows = torch.arange(rewards.numel(), device=rewards.device)
    candidates = torch.where(rewards == extreme[group_ids], rows, rewards.numel())
    first = torch.full((num_prompts,), rewards.numel(), dtype=torch.long, device=rewards.device)
    return first.scatter_reduce(0, group_ids, candidates, reduce="amin")


SFT_LOSS_TYPES = ("mean", "sum")


def sft_loss(
    token_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    num_prompts: int,
    loss_type: str = "mean",
) -> torch.Tensor:
    """Negative log-likelihood of each prompt's best completion, averaged or summed over its tokens.

    Args:
        token_logps (`torch.Tensor` of shape `(num_completions, seq_len)`): Per-token log-probabilities.
        completion_mask (`torch.Tensor` of shape `(num_completions, seq_len)`): 1 for the scored completion tokens.
        rewards (`torch.Tensor` of shape `(num_completions,)`): Reward of each completion.
        group_ids (`torch.LongTensor` of shape `(num_completions,)`): Prompt index of each completion.
        num_prompts (`int`): Number of prompts.
        loss_type (`str`, *optional*, defaults to `"mean"`):
            `"mean"`: `-(1 / |y_i'|) sum_t log pi(y_i',t)`, the average over the best completion's own tokens, as the
            official code averages (it also counts padding, which this does not). `"sum"`: `-sum_t log pi(y_i',t)`,
            the paper's eq. 4.

    Returns:
        `torch.Tensor` of shape `(num_prompts,)`.
    """
    if loss_type not in SFT_LOSS_TYPES:
        raise ValueError(f"`sft_loss_type` must be one of {SFT_LOSS_TYPES}, got {loss_type!r}.")
    best = best_completion_index(rewards, group_ids, num_prompts)
    mask = completion_mask[best].to(token_logps.dtype)
    nll = -(token_logps[best] * mask).sum(dim=-1)
    return nll / mask.sum(dim=-1) if loss_type == "mean" else nll


@dataclass
class RRHFLossOutput:
    """Per-prompt losses and statistics of one batch.

    Args:
        loss (`torch.Tensor` of shape `(num_prompts,)`): `rrhf_weight * rank + sft_weight * sft`.
        rank_loss (`torch.Tensor` of shape `(num_prompts,)`): The ranking term.
        sft_loss (`torch.Tensor` of shape `(num_prompts,)`): The fine-tuning term.
        scores (`torch.Tensor` of shape `(num_completions,)`): Length-normalized log-probabilities `p_i`.
        correct_pairs (`torch.Tensor` of shape `(num_prompts,)`): Ordered pairs with `p_i < p_j` (agreeing order).
        num_pairs (`torch.Tensor` of shape `(num_prompts,)`): Ordered pairs (`r_i < r_j`).
        best_scores (`torch.Tensor` of shape `(num_prompts,)`): `p` of each prompt's best completion.
        worst_scores (`torch.Tensor` of shape `(num_prompts,)`): `p` of each prompt's worst completion.
    """

    loss: torch.Tensor
    rank_loss: torch.Tensor
    sft_loss: torch.Tensor
    scores: torch.Tensor
    correct_pairs: torch.Tensor
    num_pairs: torch.Tensor
    best_scores: torch.Tensor
    worst_scores: torch.Tensor


def rrhf_loss(
    token_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    num_prompts: int,
    length_penalty: float = 1.0,
    rrhf_weight: float = 1.0,
    sft_weight: float = 1.0,
    sft_loss_type: str = "mean",
) -> RRHFLossOutput:
    """RRHF loss per prompt: `rrhf_weight * L_rank + sft_weight * L_sft`.

    Args:
        token_logps (`torch.Tensor` of shape `(num_completions, seq_len)`):
            Per-token log-probabilities under the policy.
        completion_mask (`torch.Tensor` of shape `(num_completions, seq_len)`):
            1 for the scored completion tokens (EOS included), 0 for prompt and padding.
        rewards (`torch.Tensor` of shape `(num_completions,)`):
            Reward of each completion.
        group_ids (`torch.LongTensor` of shape `(num_completions,)`):
            Index of the prompt each completion answers, in `[0, num_prompts)`.
        num_prompts (`int`):
            Number of prompts.
        length_penalty (`float`, *optional*, defaults to `1.0`):
            Exponent of the length normalization of `p_i`.
        rrhf_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the ranking term.
        sft_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the fine-tuning term.
        sft_loss_type (`str`, *optional*, defaults to `"mean"`):
            `"mean"` averages the best completion's NLL over its tokens (the official code), `"sum"` sums it (the
            paper's eq. 4); see [`sft_loss`].

    Returns:
        [`RRHFLossOutput`]: the per-prompt loss and statistics. The batch loss is `output.loss.mean()`.
    """
    scores = length_normalized_logps(token_logps, completion_mask, length_penalty)
    ranking = rank_loss(scores, rewards, group_ids, num_prompts)
    finetuning = sft_loss(token_logps, completion_mask, rewards, group_ids, num_prompts, sft_loss_type)
    with torch.no_grad():
        pairs = ordered_pairs(rewards, group_ids)
        agree = pairs & (scores.unsqueeze(1) < scores.unsqueeze(0))
        zeros = scores.new_zeros(num_prompts)
        correct_pairs = zeros.index_add(0, group_ids, agree.sum(dim=1).to(scores.dtype))
        num_pairs = zeros.index_add(0, group_ids, pairs.sum(dim=1).to(scores.dtype))
        best_scores = scores[best_completion_index(rewards, group_ids, num_prompts)]
        worst_scores = scores[worst_completion_index(rewards, group_ids, num_prompts)]
    return RRHFLossOutput(
        loss=rrhf_weight * ranking + sft_weight * finetuning,
        rank_loss=ranking,
        sft_loss=finetuning,
        scores=scores,
        correct_pairs=correct_pairs,
        num_pairs=num_pairs,
        best_scores=best_scores.detach(),
        worst_scores=worst_scores.detach(),
    )

"""The RLAIF distillation loss: a reward model learns the judge's soft preference labels."""

import torch
import torch.nn.functional as F


def soft_preference_loss(
    rewards_a: torch.Tensor, rewards_b: torch.Tensor, soft_labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy between the soft label and the reward model's Bradley-Terry preference.

        L = -[ p * log sigmoid(r_A - r_B) + (1 - p) * log sigmoid(r_B - r_A) ]

    With `p = 1` this is the Bradley-Terry loss of TRL's `RewardTrainer`. Its minimum over the reward margin is at
    `sigmoid(r_A - r_B) = p`: the reward model learns the judge's confidence, not just its choice.

    Args:
        rewards_a (`torch.Tensor` of shape `(batch,)`): Rewards of the completions labeled `p`.
        rewards_b (`torch.Tensor` of shape `(batch,)`): Rewards of the other completions.
        soft_labels (`torch.Tensor` of shape `(batch,)`): `p`, the probability that `a` is preferred, in [0, 1].
        reduction (`str`, *optional*, defaults to `"mean"`): `"mean"`, `"sum"` or `"none"`.

    Returns:
        `torch.Tensor`: The loss, reduced as asked.
    """
    if rewards_a.shape != rewards_b.shape or rewards_a.shape != soft_labels.shape:
        raise ValueError(
            f"rewards_a {tuple(rewards_a.shape)}, rewards_b {tuple(rewards_b.shape)} and soft_labels "
            f"{tuple(soft_labels.shape)} must have the same shape."
        )
    margin = rewards_a - rewards_b
    p = soft_labels.to(margin.dtype)
    losses = -(p * F.logsigmoid(margin) + (1 - p) * F.logsigmoid(-margin))
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"`reduction` must be 'mean', 'sum' or 'none', got {reduction!r}.")

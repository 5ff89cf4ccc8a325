"""RRHF loss against values computed by hand.

Prompt A has three completions, prompt B two with tied rewards. Per-token log-probs (mask in brackets):

    row  prompt  token_logps               mask        sum   |y|  p (length_penalty=1)  reward
    a0   A       [0, -1.0, -2.0,  0]        [0,1,1,0]   -3.0  2    -1.5                  1.0
    a1   A       [0, -4.0,  0,    0]        [0,1,0,0]   -4.0  1    -4.0                  3.0
    a2   A       [0, -1.0, -1.0, -1.0]      [0,1,1,1]   -3.0  3    -1.0                  2.0
    b0   B       [0,  0,   -2.0, -2.0]      [0,0,1,1]   -4.0  2    -2.0                  5.0
    b1   B       [0, -0.6,  0,    0]        [0,1,0,0]   -0.6  1    -0.6                  5.0

Prompt A ordered pairs (r_i < r_j): (a0, a1): max(0, -1.5 + 4.0) = 2.5; (a0, a2): max(0, -1.5 + 1.0) = 0;
(a2, a1): max(0, -1.0 + 4.0) = 3.0. Rank loss 5.5. Best is a1: SFT = 4.0 / 1 = 4.0. Total 9.5.
Only (a0, a2) has p in reward order: 1 correct pair of 3.
Prompt B: tied rewards give no pair, rank loss 0. Best is the first of the tie, b0: SFT = 4.0 / 2 = 2.0. Total 2.0.
With `sft_loss_type="sum"` (paper eq. 4) the SFT terms are the summed NLLs, 4.0 and 4.0: totals 9.5 and 4.0.
"""

import pytest
import torch

from trl_won.rrhf.loss import (
    best_completion_index,
    length_normalized_logps,
    rank_loss,
    rrhf_loss,
    sft_loss,
    worst_completion_index,
)


# Rows deliberately interleaved (A, B, A, B, A) to check that grouping does not rely on contiguity.
ORDER = ["a0", "b0", "a1", "b1", "a2"]
ROWS = {
    "a0": ([0, -1.0, -2.0, 0], [0, 1, 1, 0], 1.0, 0),
    "a1": ([0, -4.0, 0, 0], [0, 1, 0, 0], 3.0, 0),
    "a2": ([0, -1.0, -1.0, -1.0], [0, 1, 1, 1], 2.0, 0),
    "b0": ([0, 0, -2.0, -2.0], [0, 0, 1, 1], 5.0, 1),
    "b1": ([0, -0.6, 0, 0], [0, 1, 0, 0], 5.0, 1),
}


def batch(order=ORDER):
    logps = torch.tensor([ROWS[name][0] for name in order])
    mask = torch.tensor([ROWS[name][1] for name in order])
    rewards = torch.tensor([ROWS[name][2] for name in order])
    groups = torch.tensor([ROWS[name][3] for name in order])
    return logps, mask, rewards, groups


def test_length_normalization():
    logps, mask, _, _ = batch()
    torch.testing.assert_close(length_normalized_logps(logps, mask), torch.tensor([-1.5, -2.0, -4.0, -0.6, -1.0]))
    # length_penalty=0 is the summed log-probability; 2.0 divides by |y|^2.
    torch.testing.assert_close(length_normalized_logps(logps, mask, 0.0), torch.tensor([-3.0, -4.0, -4.0, -0.6, -3.0]))
    torch.testing.assert_close(
        length_normalized_logps(logps, mask, 2.0), torch.tensor([-0.75, -1.0, -4.0, -0.6, -1.0 / 3])
    )


def test_rank_loss_sums_hinges_over_ordered_pairs_and_ignores_ties():
    logps, mask, rewards, groups = batch()
    scores = length_normalized_logps(logps, mask)
    torch.testing.assert_close(rank_loss(scores, rewards, groups, 2), torch.tensor([5.5, 0.0]))
    # With summed log-probs (length_penalty=0): (a0,a1) max(0,-3+4)=1, (a0,a2) 0, (a2,a1) max(0,-3+4)=1.
    summed = length_normalized_logps(logps, mask, 0.0)
    torch.testing.assert_close(rank_loss(summed, rewards, groups, 2), torch.tensor([2.0, 0.0]))


def test_best_and_worst_take_the_first_of_ties():
    _, _, rewards, groups = batch()
    assert best_completion_index(rewards, groups, 2).tolist() == [2, 1]  # a1, b0
    assert worst_completion_index(rewards, groups, 2).tolist() == [0, 1]  # a0, b0


def test_sft_loss_is_mean_nll_of_the_best_completion():
    logps, mask, rewards, groups = batch()
    torch.testing.assert_close(sft_loss(logps, mask, rewards, groups, 2), torch.tensor([4.0, 2.0]))


def test_sft_loss_sum_is_the_papers_summed_nll():
    logps, mask, rewards, groups = batch()
    torch.testing.assert_close(sft_loss(logps, mask, rewards, groups, 2, "sum"), torch.tensor([4.0, 4.0]))
    out = rrhf_loss(logps, mask, rewards, groups, 2, sft_loss_type="sum")
    torch.testing.assert_close(out.loss, torch.tensor([9.5, 4.0]))
    torch.testing.assert_close(out.sft_loss, torch.tensor([4.0, 4.0]))
    with pytest.raises(ValueError, match="sft_loss_type"):
        sft_loss(logps, mask, rewards, groups, 2, "token_mean")


@pytest.mark.parametrize("loss_type, scale", [("mean", 0.5), ("sum", 1.0)])
def test_sft_gradient_per_reduction(loss_type, scale):
    logps, mask, rewards, groups = batch(["b0", "b1"])
    logps.requires_grad_(True)
    sft_loss(logps, mask, rewards, torch.zeros_like(groups), 1, loss_type).sum().backward()
    # Only the best completion (b0, first of the tie, 2 tokens) gets gradient: -1 per token, divided by 2 for "mean".
    expected = torch.zeros_like(logps)
    expected[0] = -scale * torch.tensor([0, 0, 1.0, 1.0])
    torch.testing.assert_close(logps.grad, expected)


def test_total_loss_weights_and_statistics():
    logps, mask, rewards, groups = batch()
    out = rrhf_loss(logps, mask, rewards, groups, num_prompts=2)
    torch.testing.assert_close(out.loss, torch.tensor([9.5, 2.0]))
    torch.testing.assert_close(out.correct_pairs, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(out.num_pairs, torch.tensor([3.0, 0.0]))
    torch.testing.assert_close(out.best_scores, torch.tensor([-4.0, -2.0]))
    torch.testing.assert_close(out.worst_scores, torch.tensor([-1.5, -2.0]))
    weighted = rrhf_loss(logps, mask, rewards, groups, 2, rrhf_weight=2.0, sft_weight=0.5)
    torch.testing.assert_close(weighted.loss, torch.tensor([2 * 5.5 + 0.5 * 4.0, 0.5 * 2.0]))


def test_gradient_of_the_hinge():
    logps, mask, rewards, groups = batch()
    logps.requires_grad_(True)
    rrhf_loss(logps, mask, rewards, groups, 2, sft_weight=0.0).loss.sum().backward()
    # d/dp: a0 appears as the worse side of (a0,a1) (active): +1; a1 is the better side of two active pairs: -2;
    # a2 is the worse side of (a2,a1) (active): +1. dp/dlogp = mask / |y|.
    expected = torch.zeros_like(logps)
    expected[0] = torch.tensor([0, 1, 1, 0]) / 2
    expected[2] = torch.tensor([0, -2.0, 0, 0])
    expected[4] = torch.tensor([0, 1, 1, 1]) / 3
    torch.testing.assert_close(logps.grad, expected)


@pytest.mark.parametrize("split", [["a0", "a1", "a2"], ["b0", "b1"]])
def test_per_prompt_loss_does_not_depend_on_the_rest_of_the_batch(split):
    full = rrhf_loss(*batch(), num_prompts=2).loss
    logps, mask, rewards, groups = batch(split)
    alone = rrhf_loss(logps, mask, rewards, torch.zeros_like(groups), num_prompts=1).loss
    torch.testing.assert_close(alone, full[ROWS[split[0]][3]].unsqueeze(0))

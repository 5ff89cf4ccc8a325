"""The demo's measurements, as pure list-in/number-out functions.

- `pairwise_accuracy`: share of held-out pairs whose truly better response a reward model scores higher (a tie in
  score counts one half).
- `judge_accuracy`: share of pairs where the judge's probability that a is preferred falls on the oracle's side of
  1/2 (exactly 1/2 counts one half), i.e. the RLAIF paper's "AI labeler alignment" against gold labels.
- `same_position_rate`: share of pairs for which the judge prefers the same position in both orders (RLAIF's
  position-bias measure: 0 for a consistent judge, 1 for one that always answers the same number).
- `mean_and_stderr`.
"""

import math
from collections.abc import Sequence


def pairwise_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> float:
    """Share of pairs with `chosen > rejected` (ties count 1/2)."""
    if len(chosen_scores) != len(rejected_scores):
        raise ValueError(f"Got {len(chosen_scores)} chosen scores but {len(rejected_scores)} rejected scores.")
    if not chosen_scores:
        raise ValueError("No pairs to measure the accuracy on.")
    hits = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen_scores, rejected_scores, strict=True))
    return hits / len(chosen_scores)


def judge_accuracy(prob_a_preferred: Sequence[float], a_is_better: Sequence[bool]) -> float:
    """Share of pairs where `prob_a_preferred` is on the side of 1/2 that `a_is_better` says (1/2 counts one half)."""
    if len(prob_a_preferred) != len(a_is_better):
        raise ValueError(f"Got {len(prob_a_preferred)} probabilities but {len(a_is_better)} gold labels.")
    if not prob_a_preferred:
        raise ValueError("No pairs to measure the judge on.")
    hits = 0.0
    for p, better in zip(prob_a_preferred, a_is_better, strict=True):
        hits += 0.5 if p == 0.5 else float((p > 0.5) == better)
    return hits / len(prob_a_preferred)


def same_position_rate(p_first_ab: Sequence[float], p_first_ba: Sequence[float]) -> float:
    """Share of pairs where the judge picks the same position in both orders.

    Args:
        p_first_ab (`Sequence[float]`): P("1") with a shown first.
        p_first_ba (`Sequence[float]`): P("1") with b shown first.
    """
    if len(p_first_ab) != len(p_first_ba):
        raise ValueError(f"Got {len(p_first_ab)} and {len(p_first_ba)} probabilities; give one per pair and order.")
    if not p_first_ab:
        raise ValueError("No pairs to measure the position bias on.")
    same = sum((x > 0.5 and y > 0.5) or (x < 0.5 and y < 0.5) for x, y in zip(p_first_ab, p_first_ba, strict=True))
    return same / len(p_first_ab)


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    if not values:
        raise ValueError("No values to average.")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)

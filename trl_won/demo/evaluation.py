"""The demo's measurements, as pure list-in/number-out functions.

- `pairwise_accuracy`: share of held-out pairs whose truly better response a reward model scores higher (a tie in
  score counts one half).
- `judge_accuracy`: share of pairs where the judge's probability that a is preferred falls on the oracle's side of
  1/2 (exactly 1/2 counts one half), i.e. the RLAIF paper's "AI labeler alignment" against gold labels.
- `pairwise_hits`, `judge_hits`: the per-pair hits behind those accuracies; `paired_difference`: the difference of
  two accuracies on the same pairs with its standard error (paired, so the shared difficulty of the pairs cancels).
- `mean_and_stderr`.
"""

import math
from collections.abc import Sequence


def pairwise_hits(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> list[float]:
    """Per pair: 1 if `chosen > rejected`, 1/2 for a tie, 0 otherwise."""
    if len(chosen_scores) != len(rejected_scores):
        raise ValueError(f"Got {len(chosen_scores)} chosen scores but {len(rejected_scores)} rejected scores.")
    if not chosen_scores:
        raise ValueError("No pairs to measure the accuracy on.")
    return [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen_scores, rejected_scores, strict=True)]


def pairwise_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> float:
    """Share of pairs with `chosen > rejected` (ties count 1/2)."""
    hits = pairwise_hits(chosen_scores, rejected_scores)
    return sum(hits) / len(hits)


def judge_hits(prob_a_preferred: Sequence[float], a_is_better: Sequence[bool]) -> list[float]:
    """Per pair: 1 if `prob_a_preferred` is on the side of 1/2 that `a_is_better` says, 1/2 at exactly 1/2, else 0."""
    if len(prob_a_preferred) != len(a_is_better):
        raise ValueError(f"Got {len(prob_a_preferred)} probabilities but {len(a_is_better)} gold labels.")
    if not prob_a_preferred:
        raise ValueError("No pairs to measure the judge on.")
    return [0.5 if p == 0.5 else float((p > 0.5) == better) for p, better in zip(prob_a_preferred, a_is_better)]


def judge_accuracy(prob_a_preferred: Sequence[float], a_is_better: Sequence[bool]) -> float:
    """Share of pairs where `prob_a_preferred` is on the side of 1/2 that `a_is_better` says (1/2 counts one half)."""
    hits = judge_hits(prob_a_preferred, a_is_better)
    return sum(hits) / len(hits)


def paired_difference(hits_a: Sequence[float], hits_b: Sequence[float]) -> tuple[float, float]:
    """Accuracy of a minus accuracy of b on the same pairs, and the standard error of that difference."""
    if len(hits_a) != len(hits_b):
        raise ValueError(f"Got {len(hits_a)} and {len(hits_b)} hits; compare accuracies on the same pairs.")
    return mean_and_stderr([x - y for x, y in zip(hits_a, hits_b, strict=True)])


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

"""Picking a (chosen, rejected) pair from one prompt's scored responses. Pure functions, lists in, indices out.

A pair is only formed when the base model strictly prefers the chosen response: with a pointwise model, ties give
no pair (the `reason` says why). The confidence of a pair is the base model's P(chosen > rejected): for a pointwise
model `sigmoid(r_chosen - r_rejected)`, for a pairwise judge its own probability.
"""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


# Reasons a prompt yields no pair.
TIE = "tie"  # the base model scores chosen and rejected the same (or the judge says 0.5)
ABSTAINED = "abstained"  # the judge returned None for the chosen-vs-rejected comparison
INCONSISTENT = "inconsistent"  # the judge prefers the tournament's loser to its winner when asked directly


@dataclass(frozen=True)
class Selection:
    """The pair picked from one prompt's responses, or why there is none.

    Args:
        chosen (`int` or `None`): Index of the chosen response.
        rejected (`int` or `None`): Index of the rejected response.
        confidence (`float` or `None`): The base model's P(chosen > rejected).
        reason (`str` or `None`): Why no pair was formed (`"tie"`, `"abstained"`, `"inconsistent"`), else `None`.
    """

    chosen: int | None
    rejected: int | None
    confidence: float | None
    reason: str | None = None

    @property
    def is_pair(self) -> bool:
        return self.reason is None


def sigmoid(x: float) -> float:
    """The logistic function, computed without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def random_other(num_candidates: int, exclude: int, rng: random.Random) -> int:
    """A uniformly random index in `range(num_candidates)` other than `exclude`."""
    pick = rng.randrange(num_candidates - 1)
    return pick + 1 if pick >= exclude else pick


def select_from_scores(scores: Sequence[float], strategy: str, rng: random.Random | None = None) -> Selection:
    """Pick the pair of one prompt from pointwise scores (reward model or reward functions).

    - `"west_of_n"`: chosen = the highest score, rejected = the lowest (the first one in order among equals).
    - `"best_random"`: chosen = the highest score, rejected = a uniformly random other response (drawn with `rng`).
    - `"naive"`: two responses, the higher-scored one is chosen.

    Equal scores for chosen and rejected give no pair (`reason="tie"`).

    Args:
        scores (`Sequence[float]`):
            One score per response, at least two.
        strategy (`str`):
            `"west_of_n"`, `"best_random"` or `"naive"`.
        rng (`random.Random`, *optional*):
            Random source for `"best_random"`.

    Returns:
        [`Selection`]: indices into `scores` and the confidence `sigmoid(score[chosen] - score[rejected])`.
    """
    if len(scores) < 2:
        raise ValueError(f"A pair needs at least 2 scored responses, got {len(scores)}.")
    best = max(range(len(scores)), key=scores.__getitem__)
    if strategy == "west_of_n":
        other = min(range(len(scores)), key=scores.__getitem__)
    elif strategy == "best_random":
        if rng is None:
            raise ValueError("strategy='best_random' needs a random generator `rng`.")
        other = random_other(len(scores), best, rng)
    elif strategy == "naive":
        if len(scores) != 2:
            raise ValueError(f"strategy='naive' labels exactly 2 responses, got {len(scores)}.")
        other = 1 - best
    else:
        raise ValueError(f"Unknown strategy {strategy!r}; use 'west_of_n', 'best_random' or 'naive'.")
    margin = scores[best] - scores[other]
    if margin == 0:
        return Selection(best, other, 0.5, TIE)
    return Selection(best, other, sigmoid(margin))


def selection_from_judgement(chosen: int, rejected: int, probability: float | None) -> Selection:
    """The pair (chosen, rejected) given the judge's P(chosen > rejected) from a direct comparison.

    No pair when the judge abstained (`None`), when chosen and rejected are the same response, when the judge is
    undecided (0.5), or when it prefers `rejected` (possible with a non-transitive judge).
    """
    if chosen == rejected:
        return Selection(chosen, rejected, None, INCONSISTENT)
    if probability is None:
        return Selection(chosen, rejected, None, ABSTAINED)
    if probability == 0.5:
        return Selection(chosen, rejected, probability, TIE)
    if probability < 0.5:
        return Selection(chosen, rejected, probability, INCONSISTENT)
    return Selection(chosen, rejected, probability)

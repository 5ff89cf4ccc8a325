"""Filters on West-of-N pairs. Pure functions: lists of numbers in, a keep mask (list of bools) out.

- Confidence: keep a pair when the base model's P(chosen > rejected) is at least a threshold, either absolute or the
  `q`-quantile of the confidences of the generated pairs (offline: all of them; online: a window of recent ones).
- Likelihood: keep a pair when both responses' per-token mean log-likelihood under the policy lies in
  `[min_logp, max_logp]`, so that both stay in the policy's distribution.

Each filter is computed on every pair independently of the others, so a pair can be removed by several filters.
"""

import math
from collections import deque
from collections.abc import Sequence


def quantile(values: Sequence[float], q: float) -> float:
    """The `q`-quantile of `values` with linear interpolation between order statistics (numpy's default method).

    For sorted values `x_0 <= ... <= x_{m-1}` it is `x_i + (x_{i+1} - x_i) * f` where `q * (m - 1) = i + f`.
    """
    if not values:
        raise ValueError("The quantile of an empty list is undefined.")
    if not 0 <= q <= 1:
        raise ValueError(f"The quantile level must be in [0, 1], got {q}.")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def confidence_mask(confidences: Sequence[float], threshold: float) -> list[bool]:
    """Keep the pairs whose confidence is at least `threshold`."""
    return [c >= threshold for c in confidences]


def quantile_confidence_mask(confidences: Sequence[float], q: float) -> tuple[list[bool], float | None]:
    """Keep the pairs whose confidence is at least the `q`-quantile of `confidences`.

    Returns:
        `tuple[list[bool], float | None]`: The keep mask and the threshold used (`None` when there is no pair).
    """
    if not confidences:
        return [], None
    threshold = quantile(confidences, q)
    return confidence_mask(confidences, threshold), threshold


def likelihood_mask(
    chosen_logps: Sequence[float],
    rejected_logps: Sequence[float],
    min_logp: float | None = None,
    max_logp: float | None = None,
) -> list[bool]:
    """Keep the pairs whose two per-token mean log-likelihoods both lie in `[min_logp, max_logp]` (bounds optional)."""
    low = -math.inf if min_logp is None else min_logp
    high = math.inf if max_logp is None else max_logp
    return [low <= c <= high and low <= r <= high for c, r in zip(chosen_logps, rejected_logps, strict=True)]


class RunningQuantile:
    """The `q`-quantile of the last `window` values seen, for filtering pairs as they are generated (online).

    [`update`] adds a batch of values first and then returns the quantile over the window, so the first batch is
    filtered relative to itself and later batches relative to recent history.

    Args:
        q (`float`): Quantile level in `[0, 1]`.
        window (`int`): Number of most recent values kept.
    """

    def __init__(self, q: float, window: int):
        if not 0 <= q <= 1:
            raise ValueError(f"The quantile level must be in [0, 1], got {q}.")
        if window < 1:
            raise ValueError(f"`window` must be >= 1, got {window}.")
        self.q = q
        self.values: deque[float] = deque(maxlen=window)

    def update(self, values: Sequence[float]) -> float | None:
        """Add `values` and return the current threshold (`None` while no value has been seen)."""
        self.values.extend(values)
        return quantile(list(self.values), self.q) if self.values else None

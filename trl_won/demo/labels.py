"""Preference labels in the demo world: noisy "human" labels, gold (oracle) labels, and biased judge targets.

- Human labelers follow a Bradley-Terry model on the oracle reward difference with a temperature (close pairs are
  coin flips, far-apart pairs are almost always right), and on top of that flip a fixed share of labels (slips,
  misreads): `P(a preferred) = (1 - f) * sigmoid((r_a - r_b) / T) + f * sigmoid((r_b - r_a) / T)`.
- Gold labels are the oracle's order; pairs with equal oracle reward have no gold label and are left out of every
  accuracy.
- The demo's judge is trained to answer "1" with probability `b + (1 - b) * sigmoid((r_1 - r_2) / T)`: a position bias
  `b` towards the response shown first on top of a Bradley-Terry preference, the bias RLAIF's order averaging removes.
"""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from .world import Task, demonstration, oracle_reward


def sigmoid(x: float) -> float:
    """The logistic function, safe for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass(frozen=True)
class LabelNoise:
    """How the simulated human labelers err.

    Args:
        temperature (`float`, *optional*, defaults to `1.5`):
            Bradley-Terry temperature on the oracle reward difference; `0` means no noise from it.
        flip_rate (`float`, *optional*, defaults to `0.1`):
            Share of labels flipped after the Bradley-Terry draw.
    """

    temperature: float = 1.5
    flip_rate: float = 0.1

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {self.temperature}.")
        if not 0 <= self.flip_rate <= 0.5:
            raise ValueError(f"`flip_rate` must be in [0, 0.5], got {self.flip_rate}.")

    def prob_first_preferred(self, reward_a: float, reward_b: float) -> float:
        """Probability that a labeler prefers a over b."""
        p = bradley_terry(reward_a, reward_b, self.temperature)
        return (1 - self.flip_rate) * p + self.flip_rate * (1 - p)


def bradley_terry(reward_a: float, reward_b: float, temperature: float) -> float:
    """`sigmoid((reward_a - reward_b) / temperature)`; with temperature 0, 1, 0 or 0.5 (tie)."""
    if temperature == 0:
        return 0.5 if reward_a == reward_b else float(reward_a > reward_b)
    return sigmoid((reward_a - reward_b) / temperature)


@dataclass(frozen=True)
class ResponsePair:
    """Two responses to one task, with their oracle rewards."""

    task: Task
    a: str
    b: str
    reward_a: float
    reward_b: float

    @property
    def gold(self) -> int | None:
        """0 when a is truly better, 1 when b is, `None` on a tie."""
        if self.reward_a == self.reward_b:
            return None
        return 0 if self.reward_a > self.reward_b else 1


def response_pairs(tasks: Sequence[Task], responses: Sequence[Sequence[str]]) -> list[ResponsePair]:
    """Pairs of the first two responses of each task (for instance two policy samples); a task whose two responses
    are the same text gives no pair."""
    pairs = []
    for task, group in zip(tasks, responses, strict=True):
        if len(group) < 2:
            raise ValueError(f"Need two responses per task to make a pair, got {len(group)} for {task.prompt!r}.")
        a, b = group[0], group[1]
        if a.strip() != b.strip():
            pairs.append(ResponsePair(task, a, b, oracle_reward(task.prompt, a), oracle_reward(task.prompt, b)))
    return pairs


def demonstration_pairs(tasks: Sequence[Task], seed: int) -> list[ResponsePair]:
    """For each task, two different demonstrations from independently drawn demonstrators."""
    rng = random.Random(seed)
    pairs = []
    for task in tasks:
        a = demonstration(task, rng)
        b = demonstration(task, rng)
        for _ in range(10):
            if a != b:
                break
            b = demonstration(task, rng)
        pairs.append(ResponsePair(task, a, b, oracle_reward(task.prompt, a), oracle_reward(task.prompt, b)))
    return pairs


@dataclass(frozen=True)
class LabeledPair:
    """A pair with its label: `chosen` is the response the labeler preferred."""

    task: Task
    chosen: str
    rejected: str
    chosen_reward: float
    rejected_reward: float

    @property
    def correct(self) -> bool | None:
        """Whether the label agrees with the oracle (`None` on an oracle tie)."""
        if self.chosen_reward == self.rejected_reward:
            return None
        return self.chosen_reward > self.rejected_reward


def _labeled(pair: ResponsePair, a_preferred: bool) -> LabeledPair:
    if a_preferred:
        return LabeledPair(pair.task, pair.a, pair.b, pair.reward_a, pair.reward_b)
    return LabeledPair(pair.task, pair.b, pair.a, pair.reward_b, pair.reward_a)


def human_labels(pairs: Sequence[ResponsePair], noise: LabelNoise, seed: int) -> list[LabeledPair]:
    """Label every pair as a noisy human would (ties become coin flips)."""
    rng = random.Random(seed)
    return [_labeled(p, rng.random() < noise.prob_first_preferred(p.reward_a, p.reward_b)) for p in pairs]


def gold_labels(pairs: Sequence[ResponsePair]) -> list[LabeledPair]:
    """Label by the oracle, leaving out ties: the held-out pairs every accuracy is measured on."""
    return [_labeled(p, p.gold == 0) for p in pairs if p.gold is not None]


@dataclass(frozen=True)
class JudgeBias:
    """What the demo's judge is trained to answer.

    Args:
        position_bias (`float`, *optional*, defaults to `0.3`):
            Share of answers that are "1" whatever the responses (a preference for the response shown first).
        temperature (`float`, *optional*, defaults to `0.5`):
            Bradley-Terry temperature of the remaining answers on the oracle reward difference.
    """

    position_bias: float = 0.3
    temperature: float = 0.5

    def __post_init__(self):
        if not 0 <= self.position_bias < 1:
            raise ValueError(f"`position_bias` must be in [0, 1), got {self.position_bias}.")
        if self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {self.temperature}.")

    def prob_answer_1(self, reward_1: float, reward_2: float) -> float:
        """Probability of the answer "1" when the response with `reward_1` is shown first."""
        return self.position_bias + (1 - self.position_bias) * bradley_terry(reward_1, reward_2, self.temperature)

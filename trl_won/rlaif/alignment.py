"""Labeler alignment: how well a judge's labels agree with gold (human) preferences, and its position bias."""

from collections.abc import Sequence
from dataclasses import dataclass

from .judgement import PairwiseJudgement


@dataclass(frozen=True)
class LabelerAlignment:
    """How well a judge agrees with gold (human) labels.

    Args:
        accuracy (`float` or `None`): Fraction of judged pairs where the judge's argmax is the gold choice (a tie
            counts 1/2).
        position_consistency (`float` or `None`): Fraction of pairs where the judge preferred the same completion in
            both orders.
        same_position_rate (`float` or `None`): Fraction where it preferred the same *position* after swapping (the
            paper's position-bias measure; `1 - position_consistency`).
        mean_confidence (`float` or `None`): Mean of `max(p, 1 - p)`.
        num_pairs (`int`): Pairs given.
        num_judged (`int`): Pairs the judge labeled.
    """

    accuracy: float | None
    position_consistency: float | None
    same_position_rate: float | None
    mean_confidence: float | None
    num_pairs: int
    num_judged: int

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


def alignment_metrics(judgements: Sequence[PairwiseJudgement], gold: Sequence[str] | None = None) -> LabelerAlignment:
    """Labeler alignment from judgements of pairs with known gold preferences.

    Args:
        judgements (`Sequence[PairwiseJudgement]`): The judge's judgements of pairs `(a, b)`.
        gold (`Sequence[str]`, *optional*): `"a"` or `"b"` per pair, the gold preference; defaults to `"a"` for every
            pair (pairs given as `(chosen, rejected)`).
    """
    gold = list(gold) if gold is not None else ["a"] * len(judgements)
    if len(gold) != len(judgements):
        raise ValueError(f"`gold` has {len(gold)} entries for {len(judgements)} judgements.")
    if any(g not in ("a", "b") for g in gold):
        raise ValueError("Each gold label must be 'a' or 'b'.")
    judged = [(j, g) for j, g in zip(judgements, gold, strict=True) if j.probability is not None]
    hits = [1.0 if j.preferred == g else 0.5 if j.preferred is None else 0.0 for j, g in judged]
    consistency = [j.position_consistent for j, _ in judged if j.position_consistent is not None]

    def mean(values):
        return sum(values) / len(values) if values else None

    position_consistency = mean([1.0 if c else 0.0 for c in consistency])
    return LabelerAlignment(
        accuracy=mean(hits),
        position_consistency=position_consistency,
        same_position_rate=None if position_consistency is None else 1.0 - position_consistency,
        mean_confidence=mean([j.confidence for j, _ in judged]),
        num_pairs=len(judgements),
        num_judged=len(judged),
    )

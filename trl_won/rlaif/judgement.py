"""What a judge says about one pair or one completion.

A pairwise judge shows the judge model the pair in both orders: `a` first ("Response 1") and `a` second
("Response 2"). Each order gives a probability that `a` is preferred; their mean removes the judge's position bias
(RLAIF, Lee et al. 2023). When the judge cannot say, the probability is `None` and `reason` says why.
"""

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class PairwiseJudgement:
    """A judge's preference between completions `a` and `b` of one prompt.

    Args:
        probability (`float` or `None`):
            Probability that `a` is preferred: `(probability_a_first + probability_a_second) / 2`. `None` when the
            judge cannot say (see `reason`).
        probability_a_first (`float` or `None`, *optional*):
            Probability that `a` is preferred when `a` is shown first (as "Response 1").
        probability_a_second (`float` or `None`, *optional*):
            Probability that `a` is preferred when `a` is shown second (as "Response 2").
        reason (`str` or `None`, *optional*):
            Why `probability` is `None`.
        rationale_a_first (`str` or `None`, *optional*):
            The judge's chain-of-thought rationale for the order with `a` first.
        rationale_a_second (`str` or `None`, *optional*):
            The rationale for the order with `a` second.
        final (`bool`, *optional*, defaults to `True`):
            `False` when asking again may give another answer (a failed request, a prompt over the judge's
            `max_length`). Label stores keep only final judgements, so a rerun asks again for the others.
        prompt_tokens (`int`, *optional*):
            Prompt tokens the label cost (both orders' answers, from a served judge's `usage`); `None` when unknown.
            Not part of equality (the same label, however it was paid for).
        completion_tokens (`int`, *optional*):
            Completion tokens the label cost, likewise.
    """

    probability: float | None
    probability_a_first: float | None = None
    probability_a_second: float | None = None
    reason: str | None = None
    rationale_a_first: str | None = None
    rationale_a_second: str | None = None
    final: bool = True
    prompt_tokens: int | None = field(default=None, compare=False)
    completion_tokens: int | None = field(default=None, compare=False)

    @classmethod
    def from_orders(
        cls,
        probability_a_first: float,
        probability_a_second: float,
        rationale_a_first: str | None = None,
        rationale_a_second: str | None = None,
    ) -> "PairwiseJudgement":
        """Combine the two orders' probabilities that `a` is preferred by averaging them."""
        return cls(
            probability=(probability_a_first + probability_a_second) / 2,
            probability_a_first=probability_a_first,
            probability_a_second=probability_a_second,
            rationale_a_first=rationale_a_first,
            rationale_a_second=rationale_a_second,
        )

    @classmethod
    def unjudged(cls, reason: str, final: bool = True) -> "PairwiseJudgement":
        """A judgement without probability, saying why."""
        return cls(probability=None, reason=reason, final=final)

    @property
    def preferred(self) -> str | None:
        """`"a"` or `"b"`, whichever is more likely preferred; `None` for a tie or no judgement."""
        if self.probability is None or self.probability == 0.5:
            return None
        return "a" if self.probability > 0.5 else "b"

    @property
    def position_consistent(self) -> bool | None:
        """Whether the judge preferred the same completion in both orders (`None` if an order is missing or tied).

        An inconsistent judge preferred the same *position* after the swap: the paper's position-bias measure.
        """
        first, second = self.probability_a_first, self.probability_a_second
        if first is None or second is None or first == 0.5 or second == 0.5:
            return None
        return (first > 0.5) == (second > 0.5)

    @property
    def confidence(self) -> float | None:
        """`max(p, 1 - p)` of the combined probability, in [0.5, 1]."""
        return None if self.probability is None else max(self.probability, 1.0 - self.probability)

    def swapped(self) -> "PairwiseJudgement":
        """The same judgement seen from `b`: for the pair `(b, a)`."""

        def flip(p):
            return None if p is None else 1.0 - p

        return replace(
            self,
            probability=flip(self.probability),
            probability_a_first=flip(self.probability_a_second),
            probability_a_second=flip(self.probability_a_first),
            rationale_a_first=self.rationale_a_second,
            rationale_a_second=self.rationale_a_first,
        )


@dataclass(frozen=True)
class ScoreJudgement:
    """A judge's score of one completion (direct RLAIF).

    Args:
        score (`float` or `None`):
            The expected score normalized to [-1, 1], `None` when the judge cannot say (see `reason`).
        expected_score (`float` or `None`, *optional*):
            The expected score on the judge's own scale (for instance 1 to 10).
        reason (`str` or `None`, *optional*):
            Why `score` is `None`.
        rationale (`str` or `None`, *optional*):
            The judge's chain-of-thought rationale, if it gave one.
        final (`bool`, *optional*, defaults to `True`):
            `False` when asking again may give another answer; such judgements are not stored.
        prompt_tokens (`int`, *optional*):
            Prompt tokens the label cost (a served judge's `usage`); `None` when unknown. Not part of equality.
        completion_tokens (`int`, *optional*):
            Completion tokens the label cost, likewise.
    """

    score: float | None
    expected_score: float | None = None
    reason: str | None = None
    rationale: str | None = None
    final: bool = True
    prompt_tokens: int | None = field(default=None, compare=False)
    completion_tokens: int | None = field(default=None, compare=False)

    @classmethod
    def unjudged(cls, reason: str, final: bool = True) -> "ScoreJudgement":
        return cls(score=None, reason=reason, final=final)

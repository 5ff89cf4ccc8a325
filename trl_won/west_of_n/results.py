"""The data types of the West-of-N step: the pair picked for one prompt ([`Selection`]) and everything computed for it
([`PromptResult`], saved as one JSON line offline). Plain dataclasses, so that storage reads them back without the
pipeline.
"""

from dataclasses import asdict, dataclass
from typing import Any

from ..data_utils import Prompt


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


@dataclass
class PromptResult:
    """Everything West-of-N computed for one prompt. Saved as one JSON line offline.

    Args:
        index (`int`): Position of the prompt in its dataset (offline) or in the stream of prompts (online).
        prompt (`str` or `list[dict]`): The prompt.
        completions (`list[str]`): The sampled responses' texts.
        finished (`list[bool]`): Whether each response ended with EOS (rather than `max_new_tokens`).
        scores (`list[float]`, *optional*): Pointwise base-model scores of the responses.
        comparisons (`list[list]`, *optional*): With a judge: every `[a, b, P(a > b) or None]` it was asked.
        chosen (`int`, *optional*): Index of the chosen response.
        rejected (`int`, *optional*): Index of the rejected response.
        chosen_score (`float`, *optional*): Base-model score of the chosen response (judge: the confidence).
        rejected_score (`float`, *optional*): Base-model score of the rejected response (judge: 1 - confidence).
        confidence (`float`, *optional*): The base model's P(chosen > rejected).
        chosen_logp (`float`, *optional*): Per-token mean log-likelihood of the chosen response under the policy.
        rejected_logp (`float`, *optional*): Same for the rejected response.
        reason (`str`, *optional*): Why there is no pair (`"tie"`, `"abstained"`, `"inconsistent"`), else `None`.
        chunk (`int`, *optional*): The group of prompts it was generated with (offline).
    """

    index: int
    prompt: Prompt
    completions: list[str]
    finished: list[bool]
    scores: list[float] | None = None
    comparisons: list[list[Any]] | None = None
    chosen: int | None = None
    rejected: int | None = None
    chosen_score: float | None = None
    rejected_score: float | None = None
    confidence: float | None = None
    chosen_logp: float | None = None
    rejected_logp: float | None = None
    reason: str | None = None
    chunk: int | None = None

    @property
    def is_pair(self) -> bool:
        return self.reason is None and self.chosen is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PromptResult":
        return cls(**data)

"""The judge protocols.

- A pairwise judge is called as `judge(prompts, completions_a, completions_b) -> list[float | None]`: the probability
  that each `a` is preferred, or `None` when it cannot say. `judge.judge_pairs(...)` returns the full
  [`PairwiseJudgement`]s (both orders, reasons, rationales). Any such judge can label preferences, train a reward
  model, or serve as West-of-N's base preference model.
- A scoring judge is called as `judge.score(prompts, completions) -> list[float | None]`, a score in [-1, 1] per
  completion; `judge.score_completions(...)` returns the full [`ScoreJudgement`]s.

Every judge has a `fingerprint`: a hash of everything that changes its answers (model, template, settings), which keys
its labels in a [`LabelStore`]. It never includes secrets.
"""

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from ..data_utils import Completion, Prompt
from ..identity import json_sha256
from .judgement import PairwiseJudgement, ScoreJudgement


# Bump when a change in this package changes what a judge answers for the same settings.
FINGERPRINT_VERSION = 1


def fingerprint_of(fields: dict[str, Any]) -> str:
    """A stable hash of a judge's identifying fields (JSON with sorted keys, SHA-256)."""
    return json_sha256({"version": FINGERPRINT_VERSION, **fields}, default=str)


def _is_message(message: Any) -> bool:
    return isinstance(message, dict) and all(isinstance(message.get(key), str) for key in ("role", "content"))


def _check_item(value: Any, kind: str, argument: str, index: int) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list) and value and all(_is_message(m) for m in value):
        return
    raise TypeError(
        f"`{argument}[{index}]` must be a string or a non-empty list of chat messages with string 'role' and "
        f"'content', got {type(value).__name__}: {value!r:.80}. Pass {kind}s in TRL's standard or conversational "
        "format."
    )


def check_inputs(argument_values: dict[str, Sequence]) -> int:
    """Check that the judge's arguments have one entry per item, each in a supported format; return the count."""
    for name, values in argument_values.items():
        if isinstance(values, (str, dict)) or not hasattr(values, "__len__"):
            raise TypeError(
                f"`{name}` must be a list with one entry per item, got {type(values).__name__}: {values!r:.80}."
            )
    lengths = {name: len(values) for name, values in argument_values.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"The judge needs one entry per item in each argument, got lengths {lengths}. Pass lists of equal length."
        )
    for name, values in argument_values.items():
        kind = "prompt" if name == "prompts" else "completion"
        for i, value in enumerate(values):
            _check_item(value, kind, name, i)
    return next(iter(lengths.values()), 0)


class _Judge(ABC):
    """What both kinds of judge share: the checked sync/async calls, judging in chunks, the fingerprint."""

    _kind: str  # "pairwise" or "score": part of the fingerprint
    _items: str  # what one judgement is of, for messages

    def _checked(self, compute: Callable, **arguments: Sequence) -> list:
        """`compute(*lists)` after checking the arguments, checking that it gives one judgement per item."""
        count = check_inputs(arguments)
        return self._one_per_item(compute(*map(list, arguments.values())), count) if count else []

    async def _achecked(self, compute: Callable, **arguments: Sequence) -> list:
        """Async [`_checked`]."""
        count = check_inputs(arguments)
        return self._one_per_item(await compute(*map(list, arguments.values())), count) if count else []

    def _one_per_item(self, judgements: list, count: int) -> list:
        if len(judgements) != count:
            raise RuntimeError(
                f"{type(self).__name__} returned {len(judgements)} judgements for {count} {self._items}."
            )
        return judgements

    def _in_chunks(self, judge: Callable, columns: Sequence[list], on_judged: Callable, chunk_size: int) -> None:
        """Judge `chunk_size` items at a time with `judge(*columns)`, handing each chunk's judgements to
        `on_judged(indices, judgements)`: the default streaming of a judge with no requests in flight (a local one)."""
        for start in range(0, len(columns[0]), chunk_size):
            stop = min(start + chunk_size, len(columns[0]))
            on_judged(list(range(start, stop)), judge(*(column[start:stop] for column in columns)))

    @abstractmethod
    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything that changes this judge's answers (never a secret)."""

    @property
    def fingerprint(self) -> str:
        """Hash of [`fingerprint_fields`]: labels from judges with the same fingerprint are interchangeable."""
        return self.described_fingerprint()[0]

    def described_fingerprint(self) -> tuple[str, dict[str, Any]]:
        """The fingerprint and the fields it hashes, computed once (the fields may digest a model's weights)."""
        fields = self.fingerprint_fields()
        return fingerprint_of({"kind": self._kind, **fields}), fields


class PairwiseJudge(_Judge):
    """Base class of pairwise judges. Subclasses implement `_judge_pairs` and `fingerprint_fields`."""

    _kind = "pairwise"
    _items = "pairs"

    def judge_pairs(
        self, prompts: Sequence[Prompt], completions_a: Sequence[Completion], completions_b: Sequence[Completion]
    ) -> list[PairwiseJudgement]:
        """Judge each pair `(a, b)` of completions of its prompt, in both orders.

        Args:
            prompts (`Sequence[str | list[dict]]`): The prompts.
            completions_a (`Sequence[str | list[dict]]`): One completion of each prompt.
            completions_b (`Sequence[str | list[dict]]`): Another completion of each prompt.

        Returns:
            `list[PairwiseJudgement]`: One judgement per pair, in order.
        """
        return self._checked(
            self._judge_pairs, prompts=prompts, completions_a=completions_a, completions_b=completions_b
        )

    async def ajudge_pairs(
        self, prompts: Sequence[Prompt], completions_a: Sequence[Completion], completions_b: Sequence[Completion]
    ) -> list[PairwiseJudgement]:
        """Async [`judge_pairs`]."""
        return await self._achecked(
            self._ajudge_pairs, prompts=prompts, completions_a=completions_a, completions_b=completions_b
        )

    async def _ajudge_pairs(
        self, prompts: list[Prompt], completions_a: list[Completion], completions_b: list[Completion]
    ) -> list[PairwiseJudgement]:
        # Local judges compute synchronously: run them in a worker thread so the event loop stays free.
        return await asyncio.to_thread(self._judge_pairs, prompts, completions_a, completions_b)

    def _judge_pairs_streaming(
        self,
        prompts: list[Prompt],
        completions_a: list[Completion],
        completions_b: list[Completion],
        on_judged: Callable[[list[int], list[PairwiseJudgement]], None],
        chunk_size: int,
    ) -> None:
        """Judge many pairs, handing each judgement to `on_judged(indices, judgements)` as soon as it is known (so
        that a caller can store it). This default judges `chunk_size` pairs at a time; a judge with requests in
        flight (a served one) overrides it to keep them flowing across chunks."""
        self._in_chunks(self.judge_pairs, [prompts, completions_a, completions_b], on_judged, chunk_size)

    def __call__(
        self, prompts: Sequence[Prompt], completions_a: Sequence[Completion], completions_b: Sequence[Completion]
    ) -> list[float | None]:
        """Probability that each `a` is preferred over its `b`, or `None` where the judge cannot say."""
        return [j.probability for j in self.judge_pairs(prompts, completions_a, completions_b)]

    @abstractmethod
    def _judge_pairs(
        self, prompts: list[Prompt], completions_a: list[Completion], completions_b: list[Completion]
    ) -> list[PairwiseJudgement]: ...


class ScoringJudge(_Judge):
    """Base class of scoring judges (direct RLAIF). Subclasses implement `_score_completions` and
    `fingerprint_fields`."""

    _kind = "score"
    _items = "items"

    def score_completions(self, prompts: Sequence[Prompt], completions: Sequence[Completion]) -> list[ScoreJudgement]:
        """Score each completion of its prompt.

        Returns:
            `list[ScoreJudgement]`: One judgement per completion, in order.
        """
        return self._checked(self._score_completions, prompts=prompts, completions=completions)

    async def ascore_completions(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion]
    ) -> list[ScoreJudgement]:
        """Async [`score_completions`]."""
        return await self._achecked(self._ascore_completions, prompts=prompts, completions=completions)

    async def _ascore_completions(self, prompts: list[Prompt], completions: list[Completion]) -> list[ScoreJudgement]:
        return await asyncio.to_thread(self._score_completions, prompts, completions)

    def _score_streaming(
        self,
        prompts: list[Prompt],
        completions: list[Completion],
        on_judged: Callable[[list[int], list[ScoreJudgement]], None],
        chunk_size: int,
    ) -> None:
        """Score many completions, handing each judgement to `on_judged` as soon as it is known (see
        [`PairwiseJudge._judge_pairs_streaming`])."""
        self._in_chunks(self.score_completions, [prompts, completions], on_judged, chunk_size)

    def score(self, prompts: Sequence[Prompt], completions: Sequence[Completion]) -> list[float | None]:
        """Score in [-1, 1] of each completion, or `None` where the judge cannot say."""
        return [j.score for j in self.score_completions(prompts, completions)]

    @abstractmethod
    def _score_completions(self, prompts: list[Prompt], completions: list[Completion]) -> list[ScoreJudgement]: ...

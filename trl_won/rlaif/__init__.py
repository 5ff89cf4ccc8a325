"""RLAIF: LLM judges, a crash-safe label store, soft-label reward training and an in-training labeler callback.

See `docs/rlaif.md`.
"""

from .answer_tokens import AnswerTokens, answer_distribution, resolve_answer_tokens
from .base import PairwiseJudge, ScoringJudge
from .judgement import PairwiseJudgement, ScoreJudgement
from .openai_client import JudgeRequestError, RequestStats
from .openai_judge import OpenAIJudge
from .score_judges import OpenAIScoreJudge, TransformersScoreJudge
from .templates import (
    HARMLESSNESS,
    HELPFULNESS,
    SUMMARIZATION,
    PairwiseExemplar,
    PairwiseTemplate,
    ScoreExemplar,
    ScoreTemplate,
)
from .transformers_judge import TransformersJudge


__all__ = [
    "HARMLESSNESS",
    "HELPFULNESS",
    "SUMMARIZATION",
    "AnswerTokens",
    "JudgeRequestError",
    "OpenAIJudge",
    "OpenAIScoreJudge",
    "PairwiseExemplar",
    "PairwiseJudge",
    "PairwiseJudgement",
    "PairwiseTemplate",
    "RequestStats",
    "ScoreExemplar",
    "ScoreJudgement",
    "ScoreTemplate",
    "ScoringJudge",
    "TransformersJudge",
    "TransformersScoreJudge",
    "answer_distribution",
    "resolve_answer_tokens",
]

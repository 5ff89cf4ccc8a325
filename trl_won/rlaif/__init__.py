"""RLAIF: LLM judges, a crash-safe label store, soft-label reward training and an in-training labeler callback.

See `docs/rlaif.md`.
"""

from .alignment import LabelerAlignment, alignment_metrics
from .answer_tokens import AnswerTokens, answer_distribution, resolve_answer_tokens
from .base import PairwiseJudge, ScoringJudge
from .batch import BatchFileError, BatchSettings, cancel_batches
from .cached import judge_pairs_cached, score_cached
from .callback import RLAIFLabelerCallback
from .judgement import PairwiseJudgement, ScoreJudgement
from .labeling import label_preferences, labeler_alignment, write_batch_requests
from .loss import soft_preference_loss
from .openai_client import JudgeClient, JudgeError, JudgeRequestError, RequestStats
from .openai_judge import OpenAIJudge, OpenAIScoreJudge
from .reward_funcs import judge_reward_func
from .reward_trainer import DataCollatorForSoftPreference, RLAIFRewardConfig, RLAIFRewardTrainer
from .store import LabelStore, LabelStoreError, RunningBatchError
from .templates import (
    HARMLESSNESS,
    HELPFULNESS,
    SUMMARIZATION,
    PairwiseExemplar,
    PairwiseTemplate,
    ScoreExemplar,
    ScoreTemplate,
)
from .transformers_judge import TransformersJudge, TransformersScoreJudge


__all__ = [
    "HARMLESSNESS",
    "HELPFULNESS",
    "SUMMARIZATION",
    "AnswerTokens",
    "BatchFileError",
    "BatchSettings",
    "DataCollatorForSoftPreference",
    "JudgeClient",
    "JudgeError",
    "JudgeRequestError",
    "LabelStore",
    "LabelStoreError",
    "LabelerAlignment",
    "OpenAIJudge",
    "OpenAIScoreJudge",
    "PairwiseExemplar",
    "RunningBatchError",
    "PairwiseJudge",
    "PairwiseJudgement",
    "PairwiseTemplate",
    "RLAIFLabelerCallback",
    "RLAIFRewardConfig",
    "RLAIFRewardTrainer",
    "RequestStats",
    "ScoreExemplar",
    "ScoreJudgement",
    "ScoreTemplate",
    "ScoringJudge",
    "TransformersJudge",
    "TransformersScoreJudge",
    "alignment_metrics",
    "answer_distribution",
    "cancel_batches",
    "judge_pairs_cached",
    "judge_reward_func",
    "label_preferences",
    "labeler_alignment",
    "resolve_answer_tokens",
    "score_cached",
    "soft_preference_loss",
    "write_batch_requests",
]

"""trl_won: West-of-N, RRHF and RLAIF for Hugging Face TRL.

The public API is imported lazily: `import trl_won` is light (no torch, transformers or TRL) and each name loads its
submodule the first time it is used, so that `trl-won --help` answers at once.
"""

import importlib
from typing import TYPE_CHECKING

from .errors import TrlWonError, UsageError


if TYPE_CHECKING:
    from .generation import SamplingParams, sample_completions
    from .rewards import RewardModelScorer
    from .rlaif import (
        HARMLESSNESS,
        HELPFULNESS,
        SUMMARIZATION,
        JudgeError,
        LabelStore,
        OpenAIJudge,
        OpenAIScoreJudge,
        PairwiseJudge,
        PairwiseJudgement,
        PairwiseTemplate,
        RLAIFLabelerCallback,
        RLAIFRewardConfig,
        RLAIFRewardTrainer,
        ScoreJudgement,
        ScoreTemplate,
        ScoringJudge,
        TransformersJudge,
        TransformersScoreJudge,
        judge_reward_func,
        label_preferences,
        labeler_alignment,
        soft_preference_loss,
    )
    from .rrhf import DataCollatorForRRHF, RRHFConfig, RRHFTrainer, add_rewards
    from .west_of_n import (
        WestOfNConfig,
        WestOfNDataCollator,
        WestOfNGenerator,
        WestOfNRewardTrainer,
        iterative_west_of_n,
        mix_preference_datasets,
        mix_preferences_and_prompts,
        read_west_of_n_pairs,
    )

# submodule -> the public names it defines
_SUBMODULES = {
    "generation": ["SamplingParams", "sample_completions"],
    "rewards": ["RewardModelScorer"],
    "rlaif": [
        "HARMLESSNESS",
        "HELPFULNESS",
        "SUMMARIZATION",
        "JudgeError",
        "LabelStore",
        "OpenAIJudge",
        "OpenAIScoreJudge",
        "PairwiseJudge",
        "PairwiseJudgement",
        "PairwiseTemplate",
        "RLAIFLabelerCallback",
        "RLAIFRewardConfig",
        "RLAIFRewardTrainer",
        "ScoreJudgement",
        "ScoreTemplate",
        "ScoringJudge",
        "TransformersJudge",
        "TransformersScoreJudge",
        "judge_reward_func",
        "label_preferences",
        "labeler_alignment",
        "soft_preference_loss",
    ],
    "rrhf": ["DataCollatorForRRHF", "RRHFConfig", "RRHFTrainer", "add_rewards"],
    "west_of_n": [
        "WestOfNConfig",
        "WestOfNDataCollator",
        "WestOfNGenerator",
        "WestOfNRewardTrainer",
        "iterative_west_of_n",
        "mix_preference_datasets",
        "mix_preferences_and_prompts",
        "read_west_of_n_pairs",
    ],
}
_LAZY = {name: module for module, names in _SUBMODULES.items() for name in names}


__version__ = "0.1.0"

__all__ = [
    "TrlWonError",
    "UsageError",
    "HARMLESSNESS",
    "HELPFULNESS",
    "SUMMARIZATION",
    "LabelStore",
    "JudgeError",
    "OpenAIJudge",
    "OpenAIScoreJudge",
    "PairwiseJudge",
    "PairwiseJudgement",
    "PairwiseTemplate",
    "RLAIFLabelerCallback",
    "RLAIFRewardConfig",
    "RLAIFRewardTrainer",
    "ScoreJudgement",
    "ScoreTemplate",
    "ScoringJudge",
    "TransformersJudge",
    "TransformersScoreJudge",
    "judge_reward_func",
    "label_preferences",
    "labeler_alignment",
    "soft_preference_loss",
    "DataCollatorForRRHF",
    "RRHFConfig",
    "RRHFTrainer",
    "RewardModelScorer",
    "SamplingParams",
    "WestOfNConfig",
    "WestOfNDataCollator",
    "WestOfNGenerator",
    "WestOfNRewardTrainer",
    "add_rewards",
    "iterative_west_of_n",
    "mix_preference_datasets",
    "mix_preferences_and_prompts",
    "read_west_of_n_pairs",
    "sample_completions",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # import once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

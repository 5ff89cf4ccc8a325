"""trl_won: West-of-N, RRHF and RLAIF for Hugging Face TRL.

The public API is imported lazily: `import trl_won` is light (no torch, transformers or TRL) and each name loads its
submodule the first time it is used, so that `trl-won --help` answers at once.
"""

import logging
from typing import TYPE_CHECKING

from .errors import TrlWonError, UsageError
from .utils import lazy_exports


class _BitsandbytesKernelNotice(logging.Filter):
    """Drops bitsandbytes' notice that it could not fetch its optional CPU 4-bit kernel from the Hub.

    transformers imports PEFT, and PEFT imports bitsandbytes, as soon as `TrainingArguments` is imported, so every
    config and command of this package imports bitsandbytes, 4-bit or not. On a CPU with AVX512-BF16, bitsandbytes then
    tries to fetch `kernels-community/quantization-bitsandbytes` with the `kernels` package and, offline or without
    `kernels`, prints "Failed to load CPU gemm_4bit_forward from kernels-community: ..." (and `kernels` may add
    "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes' ..."). 4-bit layers on the CPU
    then run on bitsandbytes' own kernel; nothing is broken. Only these two records, on the two loggers that emit them,
    are dropped; every other message of both libraries is shown.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (
            message.startswith("Failed to load CPU gemm_4bit_forward from kernels-community")
            or "kernels-community/quantization-bitsandbytes" in message
        )


for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
    logging.getLogger(_name).addFilter(_BitsandbytesKernelNotice())


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


__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES, globals())

"""trl_won: West-of-N, RRHF and RLAIF for Hugging Face TRL."""

from .generation import SamplingParams, sample_completions
from .rewards import RewardModelScorer
from .rrhf import DataCollatorForRRHF, RRHFConfig, RRHFTrainer, add_rewards


__version__ = "0.1.0"

__all__ = [
    "DataCollatorForRRHF",
    "RRHFConfig",
    "RRHFTrainer",
    "RewardModelScorer",
    "SamplingParams",
    "add_rewards",
    "sample_completions",
]

"""trl_won: West-of-N, RRHF and RLAIF for Hugging Face TRL."""

from .generation import SamplingParams, sample_completions
from .rewards import RewardModelScorer
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


__version__ = "0.1.0"

__all__ = [
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

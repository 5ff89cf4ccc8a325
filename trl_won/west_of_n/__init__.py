"""West-of-N synthetic preference generation (Pace et al., arXiv 2401.12086), offline and online."""

from .config import WestOfNConfig
from .generator import WestOfNGenerator
from .iterative import iterative_west_of_n
from .mixing import mix_preference_datasets, mix_preferences_and_prompts
from .online import WestOfNDataCollator
from .pairs_dataset import read_west_of_n_pairs
from .preference import PairwisePreferenceModel, PointwisePreferenceModel, build_preference_model
from .storage import DamagedPairsDirError, ResumeMismatchError
from .trainer import WestOfNRewardTrainer


__all__ = [
    "DamagedPairsDirError",
    "PairwisePreferenceModel",
    "PointwisePreferenceModel",
    "ResumeMismatchError",
    "WestOfNConfig",
    "WestOfNDataCollator",
    "WestOfNGenerator",
    "WestOfNRewardTrainer",
    "build_preference_model",
    "iterative_west_of_n",
    "mix_preference_datasets",
    "mix_preferences_and_prompts",
    "read_west_of_n_pairs",
]

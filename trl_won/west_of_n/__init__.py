"""West-of-N synthetic preference generation (Pace et al., arXiv 2401.12086), offline and online.

The modules, in the order of the flow (each one imports only those above it):

- `config`: [`WestOfNConfig`], the settings shared by the offline generator and the online collator.
- `results`: the data types of one prompt's step: [`~results.Selection`] (the pair picked, or why there is none) and
  [`~results.PromptResult`] (everything computed for the prompt; one JSON line of a `pairs_dir` shard).
- `sampling`: the generation backends, `transformers` and vLLM: `n` samples per prompt and the per-token mean
  log-likelihood of the picked ones.
- `preference`: the base preference model (reward model, reward functions or pairwise judge), selection of the pair
  from pointwise scores, knockout tournaments for a judge, and the confidence and likelihood filters.
- `pipeline`: the step shared by both modes (sample -> score -> select -> measure the likelihood) and how it is built
  from the user's arguments.
- `storage`: the resumable `pairs_dir` (manifest, JSONL shards, summary) and the filtered preference dataset it holds
  ([`read_west_of_n_pairs`]).
- `generator`: offline West-of-N, [`WestOfNGenerator`]: a prompt dataset in, a preference dataset out, resumable and
  across processes.
- `online`: online West-of-N, [`WestOfNDataCollator`] (labels prompt-only rows during reward training) and
  [`WestOfNRewardTrainer`] (lets them reach it).
- `mixing`: training sets from West-of-N pairs: [`mix_preference_datasets`], [`mix_preferences_and_prompts`] and
  [`iterative_west_of_n`] (each round's student labels the next round's pairs).

The names below are imported lazily, each from its module when first used, so that `trl-won west-of-n --help` (which
needs only `WestOfNConfig`) does not import the generator or the trainers.
"""

from typing import TYPE_CHECKING

from ..utils import lazy_exports


if TYPE_CHECKING:
    from .config import WestOfNConfig
    from .generator import WestOfNGenerator
    from .mixing import iterative_west_of_n, mix_preference_datasets, mix_preferences_and_prompts
    from .online import WestOfNDataCollator, WestOfNRewardTrainer
    from .preference import PairwisePreferenceModel, PointwisePreferenceModel, build_preference_model
    from .storage import DamagedPairsDirError, ResumeMismatchError, read_west_of_n_pairs

# module -> the public names it defines
_SUBMODULES = {
    "config": ["WestOfNConfig"],
    "generator": ["WestOfNGenerator"],
    "mixing": ["iterative_west_of_n", "mix_preference_datasets", "mix_preferences_and_prompts"],
    "online": ["WestOfNDataCollator", "WestOfNRewardTrainer"],
    "preference": ["PairwisePreferenceModel", "PointwisePreferenceModel", "build_preference_model"],
    "storage": ["DamagedPairsDirError", "ResumeMismatchError", "read_west_of_n_pairs"],
}


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


__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES, globals())

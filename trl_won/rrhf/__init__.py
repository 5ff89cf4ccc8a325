"""RRHF: Rank Responses to align language models with Human Feedback (Yuan et al., 2023).

The names below are imported lazily, each from its submodule when first used, so that `trl-won rrhf --help` (which
needs only `RRHFConfig`) does not import the trainer.
"""

from typing import TYPE_CHECKING

from ..utils import lazy_exports


if TYPE_CHECKING:
    from .config import RRHFConfig
    from .data import DataCollatorForRRHF, select_completions
    from .loss import rrhf_loss
    from .scoring import add_rewards
    from .trainer import RRHFTrainer

# submodule -> the public names it defines
_SUBMODULES = {
    "config": ["RRHFConfig"],
    "data": ["DataCollatorForRRHF", "select_completions"],
    "loss": ["rrhf_loss"],
    "scoring": ["add_rewards"],
    "trainer": ["RRHFTrainer"],
}


__all__ = ["DataCollatorForRRHF", "RRHFConfig", "RRHFTrainer", "add_rewards", "rrhf_loss", "select_completions"]


__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES, globals())

"""RRHF: Rank Responses to align language models with Human Feedback (Yuan et al., 2023).

The names below are imported lazily, each from its submodule when first used, so that `trl-won rrhf --help` (which
needs only `RRHFConfig`) does not import the trainer.
"""

import importlib
from typing import TYPE_CHECKING


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
_LAZY = {name: module for module, names in _SUBMODULES.items() for name in names}


__all__ = ["DataCollatorForRRHF", "RRHFConfig", "RRHFTrainer", "add_rewards", "rrhf_loss", "select_completions"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # import once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

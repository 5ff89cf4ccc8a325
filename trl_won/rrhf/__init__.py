"""RRHF: Rank Responses to align language models with Human Feedback (Yuan et al., 2023)."""

from .config import RRHFConfig
from .data import DataCollatorForRRHF, select_completions
from .loss import rrhf_loss
from .scoring import add_rewards
from .trainer import RRHFTrainer


__all__ = ["DataCollatorForRRHF", "RRHFConfig", "RRHFTrainer", "add_rewards", "rrhf_loss", "select_completions"]

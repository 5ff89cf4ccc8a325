"""trl_won: West-of-N, RRHF and RLAIF for Hugging Face TRL."""

__version__ = "0.1.0"

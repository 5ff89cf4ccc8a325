"""Shared fixtures: tiny models and tokenizer built once per test session, fully offline; and the repository guard
(tests/repo_guard.py): a session fails when its tests wrote into the repository tree."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402
import torch  # noqa: E402
from repo_guard import pytest_sessionfinish, pytest_sessionstart  # noqa: E402, F401  (tests write under tmp_path)
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from trl_won.tiny import build_tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory):
    """Paths of the tiny tokenizer, policy and reward model, saved with `save_pretrained`."""
    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tokenizer(tiny_paths):
    return AutoTokenizer.from_pretrained(tiny_paths.tokenizer)


@pytest.fixture
def policy(tiny_paths):
    return AutoModelForCausalLM.from_pretrained(tiny_paths.policy)


@pytest.fixture
def reward_model(tiny_paths):
    return AutoModelForSequenceClassification.from_pretrained(tiny_paths.reward_model)


@pytest.fixture(scope="session", autouse=True)
def _help_cache(tmp_path_factory):
    """`trl-won <command> --help` caches its text (trl_won/cli/help_cache.py): in a folder of the session, never in
    the user's ~/.cache (subprocesses inherit the variable)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRL_WON_CACHE_DIR", str(tmp_path_factory.mktemp("trl-won-cache")))
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

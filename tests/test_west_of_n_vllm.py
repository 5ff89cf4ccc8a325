"""The vLLM backend's own logic (vLLM itself is not installed here): parameter and output conversion, errors."""

import math
from types import SimpleNamespace

import pytest

from trl_won.generation import SamplingParams
from trl_won.utils import derived_seed as prompt_seed
from trl_won.west_of_n import WestOfNConfig, WestOfNGenerator
from trl_won.west_of_n.sampling import sample_from_vllm_output, vllm_sampling_kwargs


def test_sampling_params_conversion():
    kwargs = vllm_sampling_kwargs(SamplingParams(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=32), 8, 123)
    assert kwargs == {
        "n": 8,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": -1,
        "max_tokens": 32,
        "seed": 123,
        "logprobs": 0,
    }
    assert vllm_sampling_kwargs(SamplingParams(top_k=5), 2, 0)["top_k"] == 5


def test_per_prompt_seeds_depend_on_the_seed_and_index_only():
    assert prompt_seed(42, 3) == 42 * 1_000_003 + 3
    assert len({prompt_seed(42, i) for i in range(100)}) == 100
    assert 0 <= prompt_seed(2**62, 5) < 2**63 - 1


def test_output_conversion_reads_the_sampled_tokens_logprobs():
    def logprob(value):
        return SimpleNamespace(logprob=value)

    finished = SimpleNamespace(
        text="Paris.",
        token_ids=[11, 12, 2],
        finish_reason="stop",
        logprobs=[{11: logprob(-1.0)}, {12: logprob(-2.0), 99: logprob(-0.5)}, {2: logprob(-0.3)}],
        cumulative_logprob=-3.3,
    )
    sample = sample_from_vllm_output(finished)
    assert (sample.text, sample.token_ids, sample.finished) == ("Paris.", [11, 12, 2], True)
    assert sample.mean_logp == pytest.approx(-1.1)

    truncated = SimpleNamespace(
        text="Par", token_ids=[11, 12], finish_reason="length", logprobs=None, cumulative_logprob=-3.0
    )
    sample = sample_from_vllm_output(truncated)
    assert not sample.finished and sample.mean_logp == pytest.approx(-1.5)
    empty = SimpleNamespace(text="", token_ids=[], finish_reason="length", logprobs=None, cumulative_logprob=None)
    assert math.isnan(sample_from_vllm_output(empty).mean_logp)


def test_missing_vllm_and_model_objects_are_clear_errors(tiny_paths, policy):
    args = WestOfNConfig(use_vllm=True, show_progress=False)
    with pytest.raises(ImportError, match=r"needs vLLM, which is not installed.*pip install"):
        WestOfNGenerator(tiny_paths.policy, args, reward_funcs=lambda prompts, completions: [0.0] * len(prompts))
    with pytest.raises(ValueError, match=r"With `use_vllm=True` the policy must be a path"):
        WestOfNGenerator(policy, args, reward_funcs=lambda prompts, completions: [0.0] * len(prompts))

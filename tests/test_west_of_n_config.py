"""WestOfNConfig: validation errors name the argument; it parses next to RewardConfig on one command line."""

import pytest
from trl import RewardConfig, TrlParser

from trl_won.west_of_n import WestOfNConfig


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 1}, r"`n` must be >= 2: a pair needs at least two responses per prompt, got 1"),
        ({"strategy": "naive"}, r"`n` must be 2 with strategy='naive'"),
        ({"strategy": "best_worst"}, r"`strategy` must be one of 'west_of_n', 'best_random', 'naive'"),
        ({"temperature": 0.0}, r"`temperature` must be > 0"),
        ({"top_p": 0.0}, r"`top_p` must be in \(0, 1\]"),
        ({"max_new_tokens": 0}, r"`max_new_tokens` must be >= 1"),
        ({"generation_batch_size": 0}, r"`generation_batch_size` must be >= 1"),
        ({"scoring_batch_size": 0}, r"`scoring_batch_size` must be >= 1"),
        ({"confidence_quantile": 0.5, "confidence_threshold": 0.7}, r"Set only one of `confidence_quantile`"),
        ({"confidence_quantile": 1.5}, r"`confidence_quantile` must be in \[0, 1\]"),
        ({"confidence_threshold": -0.1}, r"`confidence_threshold` must be a probability"),
        ({"min_logp": 0.5}, r"`min_logp` must be <= 0"),
        ({"min_logp": -1.0, "max_logp": -2.0}, r"`min_logp` \(-1.0\) must be <= `max_logp` \(-2.0\)"),
        ({"policy_init_kwargs": "{not json"}, r"`policy_init_kwargs` must be a JSON object"),
    ],
)
def test_invalid_values_are_rejected_with_the_argument_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WestOfNConfig(**kwargs)


def test_derived_settings():
    config = WestOfNConfig(n=8, generation_batch_size=64, temperature=0.9, top_k=5, max_new_tokens=32)
    assert config.prompts_per_chunk == 8
    assert WestOfNConfig(n=64, generation_batch_size=16).prompts_per_chunk == 1
    params = config.sampling_params
    assert (params.temperature, params.top_k, params.max_new_tokens) == (0.9, 5, 32)
    assert not config.filters_pairs and WestOfNConfig(min_logp=-3.0).filters_pairs


def test_parses_with_reward_config_on_one_command_line(tmp_path):
    parser = TrlParser((RewardConfig, WestOfNConfig))
    reward_args, won_args = parser.parse_args_and_config(
        [
            "--output_dir",
            str(tmp_path),
            "--n",
            "4",
            "--strategy",
            "best_random",
            "--confidence_quantile",
            "0.25",
            "--policy_init_kwargs",
            '{"dtype": "bfloat16"}',
            "--use_cpu",
            "--bf16",
            "false",
        ]
    )
    assert reward_args.output_dir == str(tmp_path)
    assert (won_args.n, won_args.strategy, won_args.confidence_quantile) == (4, "best_random", 0.25)
    assert won_args.policy_init_kwargs == {"dtype": "bfloat16"}

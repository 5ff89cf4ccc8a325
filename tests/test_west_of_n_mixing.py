"""Mixing labeled pairs with prompt-only rows (online) or generated pairs (offline)."""

import pytest
from datasets import Dataset

from trl_won.data_utils import DatasetFormatError
from trl_won.tiny import toy_preference_dataset, toy_prompt_dataset
from trl_won.west_of_n import mix_preference_datasets, mix_preferences_and_prompts


def test_one_to_one_mix_of_pairs_and_prompts():
    pairs, prompts = toy_preference_dataset(), toy_prompt_dataset()
    mixed = mix_preferences_and_prompts(pairs, prompts, seed=3)
    assert len(mixed) == 16 and mixed.column_names == ["prompt", "chosen", "rejected"]
    prompt_only = [row for row in mixed if row["chosen"] is None]
    assert len(prompt_only) == 8 and all(row["rejected"] is None for row in prompt_only)
    assert sorted(row["prompt"] for row in prompt_only) == sorted(prompts["prompt"])  # each prompt once
    labeled = [row for row in mixed if row["chosen"] is not None]
    assert sorted(labeled, key=lambda r: r["prompt"]) == sorted(pairs.to_list(), key=lambda r: r["prompt"])
    assert [row["prompt"] for row in mixed][:8] != [row["prompt"] for row in pairs.to_list()]  # shuffled


def test_ratio_reuses_prompts_and_keeps_margins():
    pairs = toy_preference_dataset().add_column("margin", [0.5] * 8)
    mixed = mix_preferences_and_prompts(pairs, toy_prompt_dataset().select(range(3)), ratio=0.5)
    prompt_only = [row for row in mixed if row["chosen"] is None]
    assert len(prompt_only) == 4  # round(0.5 * 8), drawn from 3 prompts, so one is reused
    assert len({row["prompt"] for row in prompt_only}) == 3
    assert all(row["margin"] is None for row in prompt_only)
    assert all(row["margin"] == 0.5 for row in mixed if row["chosen"] is not None)
    assert len(mix_preferences_and_prompts(pairs, toy_prompt_dataset(), ratio=None)) == 16


def test_conversational_mix():
    mixed = mix_preferences_and_prompts(
        toy_preference_dataset(conversational=True), toy_prompt_dataset(conversational=True), ratio=0.25
    )
    assert len(mixed) == 10
    assert all(row["prompt"][0]["role"] == "user" for row in mixed)


def test_mix_errors():
    with pytest.raises(DatasetFormatError, match=r"preference dataset is standard but the prompt dataset is conv"):
        mix_preferences_and_prompts(toy_preference_dataset(), toy_prompt_dataset(conversational=True))
    with pytest.raises(DatasetFormatError, match=r"no column 'prompt'"):
        mix_preferences_and_prompts(toy_preference_dataset(), Dataset.from_dict({"text": ["a"]}))
    with pytest.raises(DatasetFormatError, match=r"preference dataset has no column 'chosen', 'rejected'"):
        mix_preferences_and_prompts(toy_prompt_dataset(), toy_prompt_dataset())
    with pytest.raises(ValueError, match=r"`ratio` must be >= 0"):
        mix_preferences_and_prompts(toy_preference_dataset(), toy_prompt_dataset(), ratio=-1)


def test_offline_mix_drops_analysis_columns_and_caps_at_what_exists():
    human = toy_preference_dataset()
    synthetic = toy_preference_dataset().select(range(5)).add_column("confidence", [0.9] * 5)
    mixed = mix_preference_datasets(human, synthetic)
    assert len(mixed) == 13 and mixed.column_names == ["prompt", "chosen", "rejected"]
    assert len(mix_preference_datasets(human, synthetic, ratio=0.25)) == 10
    conversational = mix_preference_datasets(
        toy_preference_dataset(conversational=True), toy_preference_dataset(conversational=True)
    )
    assert len(conversational) == 16


def test_implicit_prompts_are_split_out_as_trl_does():
    explicit = toy_preference_dataset(conversational=True)
    implicit = Dataset.from_list(
        [
            {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"], "prompt": "text"}
            for row in explicit
        ]
    )  # conversational pairs with the user turn inside, and a plain-text `prompt` column, like UltraFeedback
    mixed = mix_preferences_and_prompts(implicit, toy_prompt_dataset(conversational=True))
    labeled = sorted((row for row in mixed if row["chosen"] is not None), key=lambda r: r["prompt"][0]["content"])
    assert labeled == sorted(explicit.to_list(), key=lambda r: r["prompt"][0]["content"])

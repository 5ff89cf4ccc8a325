"""Iterative West-of-N: the student of a round is the base reward model of the next."""

import json

from trl import RewardConfig

from tests.helpers import cpu_training_kwargs
from trl_won.tiny import toy_preference_dataset, toy_prompt_dataset
from trl_won.west_of_n import WestOfNConfig, iterative_west_of_n


def test_two_rounds_chain_base_models(tiny_paths, tmp_path):
    reward_args = RewardConfig(**cpu_training_kwargs(tmp_path, max_steps=1, per_device_train_batch_size=4))
    won_args = WestOfNConfig(n=2, max_new_tokens=4, generation_batch_size=8, show_progress=False)
    students = iterative_west_of_n(
        tiny_paths.policy,
        tiny_paths.reward_model,
        toy_preference_dataset(),
        toy_prompt_dataset().select(range(4)),
        student_model=tiny_paths.reward_model,
        output_dir=str(tmp_path / "rounds"),
        num_rounds=2,
        west_of_n_args=won_args,
        reward_args=reward_args,
    )
    assert students == [str(tmp_path / "rounds" / f"round-{r}" / "student") for r in (1, 2)]
    labelers = [
        json.loads((tmp_path / "rounds" / f"round-{r}" / "pairs" / "manifest.json").read_text())["preference_model"]
        for r in (1, 2)
    ]
    # Each identity is [kind, class, name, weights digest, tokenizer path, max_length]: round 2 is labeled by the
    # round-1 student (its own directory, trained weights), not by the base reward model again.
    first, second = (json.loads(labeler["functions"][0]) for labeler in labelers)
    assert first[0] == second[0] == "reward_model"
    assert first[4] == tiny_paths.reward_model
    assert second[4] == students[0]
    assert first[3] != second[3]

    # A rerun finds both students and loads or trains nothing (the bogus paths below would fail otherwise).
    again = iterative_west_of_n(
        "policy-that-is-never-loaded",
        "base-that-is-never-loaded",
        toy_preference_dataset(),
        [toy_prompt_dataset(), toy_prompt_dataset()],
        student_model="never-loaded",
        output_dir=str(tmp_path / "rounds"),
        num_rounds=2,
    )
    assert again == students

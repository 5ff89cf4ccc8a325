"""The methods feed each other: West-of-N candidates are an RRHF dataset."""

import torch

from tests.helpers import cpu_training_kwargs
from trl_won import RRHFConfig, RRHFTrainer, WestOfNConfig, WestOfNGenerator
from trl_won.tiny import toy_prompt_dataset


def test_west_of_n_candidates_train_rrhf(tiny_paths, tmp_path):
    config = WestOfNConfig(
        n=3, max_new_tokens=6, pairs_dir=str(tmp_path / "pairs"), keep_candidates=True, show_progress=False
    )
    generator = WestOfNGenerator(tiny_paths.policy, config, reward_model=tiny_paths.reward_model)
    pairs = generator.generate(toy_prompt_dataset(conversational=True).select(range(4)))
    ranking = pairs.select_columns(["prompt", "completions", "rewards"])
    assert all(len(c) == len(r) == 3 for c, r in zip(ranking["completions"], ranking["rewards"]))
    for row in pairs:
        assert max(row["rewards"]) == row["chosen_score"] and min(row["rewards"]) == row["rejected_score"]

    args = RRHFConfig(**cpu_training_kwargs(tmp_path / "rrhf", max_steps=1, per_device_train_batch_size=4))
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=ranking)
    before = trainer.model.lm_head.weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, trainer.model.lm_head.weight)
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))

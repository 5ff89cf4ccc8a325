import logging
import math

import pytest
import torch
from trl import RewardConfig, RewardTrainer

from tests.helpers import cpu_training_kwargs
from trl_won.data_utils import DatasetFormatError
from trl_won.rlaif import RLAIFRewardConfig, RLAIFRewardTrainer, soft_preference_loss
from trl_won.tiny import toy_preference_dataset


# ---------------------------------------------------------------------------------------------------------- loss


def test_soft_preference_loss_by_hand():
    rewards_a = torch.tensor([1.0, 0.0, -2.0])
    rewards_b = torch.tensor([0.0, 0.0, 1.0])
    p = torch.tensor([1.0, 0.5, 0.25])
    # margins 1, 0, -3:
    #   p=1:    -log sigmoid(1)                              = log(1 + e^-1)                 = 0.3132617
    #   p=0.5:  -(0.5 log 0.5 + 0.5 log 0.5)                 = log 2                         = 0.6931472
    #   p=0.25: -(0.25 log sigmoid(-3) + 0.75 log sigmoid(3)) = 0.25 * 3.0485874 + 0.75 * 0.0485874 = 0.7985874
    expected = torch.tensor([0.3132617, 0.6931472, 0.7985874])
    assert soft_preference_loss(rewards_a, rewards_b, p, reduction="none") == pytest.approx(expected, abs=1e-6)
    assert soft_preference_loss(rewards_a, rewards_b, p).item() == pytest.approx(expected.mean().item(), abs=1e-6)
    assert soft_preference_loss(rewards_a, rewards_b, p, "sum").item() == pytest.approx(
        expected.sum().item(), abs=1e-6
    )


def test_soft_preference_loss_gradient_pulls_the_preference_towards_the_soft_label():
    margin = torch.tensor([1.0, -0.5, 2.0], requires_grad=True)
    p = torch.tensor([1.0, 0.3, 0.88])
    soft_preference_loss(margin, torch.zeros(3), p, reduction="sum").backward()
    # dL/dmargin = sigmoid(margin) - p, zero where sigmoid(margin) = p.
    assert margin.grad == pytest.approx(torch.sigmoid(margin.detach()) - p, abs=1e-6)
    at_optimum = torch.tensor([math.log(0.7 / 0.3)], requires_grad=True)
    soft_preference_loss(at_optimum, torch.zeros(1), torch.tensor([0.7])).backward()
    assert at_optimum.grad.item() == pytest.approx(0.0, abs=1e-6)


def test_soft_preference_loss_checks_its_inputs():
    with pytest.raises(ValueError, match="same shape"):
        soft_preference_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="`reduction` must be"):
        soft_preference_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), reduction="max")


# ------------------------------------------------------------------------------------------------------ trainer

SOFT = [0.9, 0.6, 0.75, 1.0, 0.55, 0.8, 0.65, 0.7]


def config_kwargs(tmp_path, **overrides):
    return cpu_training_kwargs(tmp_path, **{"max_steps": 2, "per_device_train_batch_size": 8, **overrides})


def config(tmp_path, **overrides):
    return RLAIFRewardConfig(**config_kwargs(tmp_path, **overrides))


def soft_dataset():
    return toy_preference_dataset().add_column("soft_label", SOFT)


def batch_rewards(trainer, batch):
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.chunk(logits.squeeze(-1), 2)


def test_trainer_loss_is_the_distillation_loss_on_its_rewards(tiny_paths, tmp_path):
    trainer = RLAIFRewardTrainer(tiny_paths.reward_model, args=config(tmp_path), train_dataset=soft_dataset())
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    assert batch["soft_label"].tolist() == pytest.approx(SOFT)
    chosen, rejected = batch_rewards(trainer, batch)
    p = torch.tensor(SOFT)
    by_hand = -(
        p * torch.log(torch.sigmoid(chosen - rejected)) + (1 - p) * torch.log(torch.sigmoid(rejected - chosen))
    )
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
    assert loss.item() == pytest.approx(by_hand.mean().item(), abs=1e-6)
    assert trainer._metrics["eval"]["accuracy"]  # RewardTrainer's metrics are still recorded (eval mode here)
    trainer.train()
    assert all(math.isfinite(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry)


def test_hard_labels_train_exactly_like_reward_trainer(tiny_paths, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    data = toy_preference_dataset()
    # A plain RewardConfig works too.
    ours = RLAIFRewardTrainer(
        tiny_paths.reward_model, args=RewardConfig(**config_kwargs(tmp_path)), train_dataset=data
    )
    assert "no 'soft_label' column: training with hard labels" in caplog.text
    theirs = RewardTrainer(
        tiny_paths.reward_model,
        args=RewardConfig(**config_kwargs(tmp_path)),
        train_dataset=data,
    )
    batch = ours.data_collator([ours.train_dataset[i] for i in range(8)])
    assert "soft_label" not in batch
    with torch.no_grad():
        assert ours.compute_loss(ours.model, dict(batch)).item() == pytest.approx(
            theirs.compute_loss(theirs.model, dict(batch)).item(), abs=1e-6
        )
    # Soft labels of 1 are the same loss again.
    ones = RLAIFRewardTrainer(
        tiny_paths.reward_model, args=config(tmp_path / "c"), train_dataset=data.add_column("soft_label", [1.0] * 8)
    )
    with torch.no_grad():
        assert ones.compute_loss(
            ones.model, dict(ones.data_collator([ones.train_dataset[i] for i in range(8)]))
        ).item() == (pytest.approx(theirs.compute_loss(theirs.model, dict(batch)).item(), abs=1e-6))


def test_custom_soft_label_column_and_bad_labels(tiny_paths, tmp_path):
    data = toy_preference_dataset().add_column("judge_p", SOFT)
    trainer = RLAIFRewardTrainer(
        tiny_paths.reward_model, args=config(tmp_path, soft_label_column="judge_p"), train_dataset=data
    )
    assert trainer.data_collator([trainer.train_dataset[0]])["soft_label"].tolist() == pytest.approx([0.9])
    bad = toy_preference_dataset().add_column("soft_label", [0.9, 1.5] + [0.7] * 6)
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'soft_label': the soft label is 1.5"):
        RLAIFRewardTrainer(tiny_paths.reward_model, args=config(tmp_path), train_dataset=bad)
    both = soft_dataset().add_column("margin", [0.0] * 8)
    with pytest.raises(DatasetFormatError, match="both a 'soft_label' column and a 'margin' column"):
        RLAIFRewardTrainer(tiny_paths.reward_model, args=config(tmp_path), train_dataset=both)


def test_qlora_training_on_soft_labels(tiny_paths, tmp_path):
    # (TRL's own RewardTrainer fails this configuration with bf16=False; RLAIFRewardTrainer keeps the adapter in fp32.)
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    trainer = RLAIFRewardTrainer(
        tiny_paths.reward_model,
        args=config(tmp_path, learning_rate=1e-2),
        train_dataset=toy_preference_dataset(conversational=True).add_column("soft_label", SOFT),
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["score"]),
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32),
    )
    assert trainer.model.base_model.model.is_loaded_in_4bit
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before if "lora_B" in n)
    assert all(after[n].dtype == torch.float32 for n in before)

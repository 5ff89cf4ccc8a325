"""Online West-of-N: the collator inside RewardTrainer on the tiny fixtures."""

import math

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig
from trl import RewardConfig

from tests.helpers import cpu_training_kwargs
from trl_won.data_utils import DatasetFormatError, as_completion, completion_text, tokenize_for_reward_model
from trl_won.tiny import (
    build_tiny_reward_model,
    build_tiny_tokenizer,
    toy_preference_dataset,
    toy_prompt_dataset,
)
from trl_won.west_of_n import (
    WestOfNConfig,
    WestOfNDataCollator,
    WestOfNRewardTrainer,
    mix_preferences_and_prompts,
)
from trl_won.west_of_n.online import PROMPT_ONLY
from trl_won.west_of_n.results import PromptResult


def text_length(prompts, completions):
    return [float(len(completion_text(c))) for c in completions]


def won_args(**overrides):
    settings = dict(n=3, max_new_tokens=6, generation_batch_size=12, show_progress=False)
    settings.update(overrides)
    return WestOfNConfig(**settings)


def reward_args(tmp_path, **overrides):
    settings = {"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-2, **overrides}
    return RewardConfig(**cpu_training_kwargs(tmp_path / "student", **settings))


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def changed(model, before):
    return [name for name, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[name])]


def test_trains_a_lora_student_with_a_4bit_policy(tiny_paths, tmp_path):
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    collator = WestOfNDataCollator(
        tiny_paths.policy, won_args(), reward_model=tiny_paths.reward_model, quantization_config=quantization
    )
    assert collator.sampler.model.is_loaded_in_4bit
    trainer = WestOfNRewardTrainer(
        model=tiny_paths.reward_model,
        args=reward_args(tmp_path),
        train_dataset=mix_preferences_and_prompts(toy_preference_dataset(), toy_prompt_dataset()),
        data_collator=collator,
        peft_config=LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"]),
    )
    before = snapshot(trainer.model)
    assert any("lora" in name for name in before)
    trainer.train()
    updated = changed(trainer.model, before)
    assert any("lora_A" in name for name in updated) and any("lora_B" in name for name in updated)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3 and all(math.isfinite(entry["loss"]) for entry in logs)
    assert collator.total_pairs > 0
    assert logs[-1]["west_of_n/total_pairs"] == collator.total_pairs
    assert all("west_of_n/keep_rate" in entry for entry in logs)


@pytest.fixture(scope="module")
def student_paths(tmp_path_factory):
    """A student reward model with its own, different tokenizer (smaller vocabulary)."""
    root = tmp_path_factory.mktemp("student")
    tokenizer = build_tiny_tokenizer(root / "tokenizer", vocab_size=400)
    return build_tiny_reward_model(root / "model", tokenizer, seed=3)


def test_batch_is_reward_trainer_format_tokenized_for_the_student(tiny_paths, student_paths, tmp_path):
    collator = WestOfNDataCollator(tiny_paths.policy, won_args(temperature=1.0), reward_funcs=text_length)
    dataset = mix_preferences_and_prompts(toy_preference_dataset(), toy_prompt_dataset(), seed=1)
    trainer = WestOfNRewardTrainer(
        model=student_paths, args=reward_args(tmp_path), train_dataset=dataset, data_collator=collator
    )
    student_tokenizer = trainer.processing_class
    assert len(student_tokenizer) != len(collator.sampler.tokenizer)

    rows = trainer.train_dataset.select_columns(["chosen_ids", "rejected_ids", "prompt", PROMPT_ONLY])
    labeled = [r for r in rows if not r[PROMPT_ONLY]][:2]
    prompt_only = [r for r in rows if r[PROMPT_ONLY]][:3]
    recorded = []
    pipeline = collator.pipeline
    collator.pipeline = lambda *a: recorded.extend(pipeline(*a)) or recorded

    batch = collator(labeled + prompt_only)
    assert set(batch) == {"input_ids", "attention_mask"}
    pairs = [r for r in recorded if r.is_pair]
    k = len(labeled) + len(pairs)
    assert batch["input_ids"].shape[0] == 2 * k
    expected_chosen = [r["chosen_ids"] for r in labeled]
    expected_rejected = [r["rejected_ids"] for r in labeled]
    for r in pairs:
        expected_chosen.append(
            tokenize_for_reward_model(student_tokenizer, r.prompt, as_completion(r.prompt, r.completions[r.chosen]))
        )
        expected_rejected.append(
            tokenize_for_reward_model(student_tokenizer, r.prompt, as_completion(r.prompt, r.completions[r.rejected]))
        )
    for i, ids in enumerate(expected_chosen + expected_rejected):  # all chosen first, then all rejected
        assert batch["input_ids"][i, : len(ids)].tolist() == ids
        assert batch["attention_mask"][i].sum().item() == len(ids)
    # the labeled rows were tokenized by TRL; the generated ones the same way
    source = toy_preference_dataset()
    first = next(row for row in source if row["prompt"] == labeled[0]["prompt"])
    assert labeled[0]["chosen_ids"] == tokenize_for_reward_model(student_tokenizer, first["prompt"], first["chosen"])

    margin_rows = [dict(r, margin=0.5) for r in labeled] + [dict(r, margin=None) for r in prompt_only]
    batch = collator(margin_rows)
    assert batch["margin"].tolist()[: len(labeled)] == [0.5] * len(labeled)
    assert set(batch["margin"].tolist()[len(labeled) :]) <= {0.0}


def test_conversational_online_training(tiny_paths, tmp_path):
    collator = WestOfNDataCollator(tiny_paths.policy, won_args(), reward_funcs=text_length)
    dataset = mix_preferences_and_prompts(
        toy_preference_dataset(conversational=True), toy_prompt_dataset(conversational=True)
    )
    trainer = WestOfNRewardTrainer(
        model=tiny_paths.reward_model,
        args=reward_args(tmp_path, max_steps=2),
        train_dataset=dataset,
        data_collator=collator,
    )
    before = snapshot(trainer.model)
    trainer.train()
    assert changed(trainer.model, before)
    assert collator.total_pairs > 0
    assert all(math.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


def test_a_batch_whose_pairs_are_all_filtered_trains_nothing(tiny_paths, tmp_path):
    # Prompt-only training set; no sigmoid of these small margins reaches 1, so every pair is filtered out.
    collator = WestOfNDataCollator(
        tiny_paths.policy,
        won_args(confidence_threshold=1.0),
        reward_funcs=lambda prompts, completions: [0.01 * len(completion_text(c)) for c in completions],
    )
    trainer = WestOfNRewardTrainer(
        model=tiny_paths.reward_model,
        args=reward_args(tmp_path, max_steps=2),
        train_dataset=toy_prompt_dataset(),
        data_collator=collator,
    )
    before = snapshot(trainer.model)
    trainer.train()
    assert not changed(trainer.model, before)
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["loss"] for e in logs] == [0.0, 0.0]
    # the dataloader prepares one batch ahead, so both batches were collated before the first log
    assert logs[0]["west_of_n/skipped_batch_rate"] == 1.0 and logs[0]["west_of_n/filtered_confidence_rate"] == 1.0
    assert collator.num_batches == 2 and collator.total_pairs == 0


def test_running_quantile_and_likelihood_filters_online(tiny_paths):
    collator = WestOfNDataCollator(
        tiny_paths.policy,
        won_args(confidence_quantile=0.5, confidence_window=4, min_logp=-5.0),
        reward_funcs=text_length,
    )

    def result(index, confidence, logp=-1.0):
        return PromptResult(
            index, "p", ["a", "b"], [True, True], [1.0, 0.0], None, 0, 1, 1.0, 0.0, confidence, logp, -1.0
        )

    kept, stats = collator.filter([result(0, 0.6), result(1, 0.8)])  # threshold 0.7
    assert [r.index for r in kept] == [1] and stats["confidence_threshold"] == pytest.approx(0.7)
    # window of 4: 0.8, 0.9, 0.65, 0.85 -> quantile 0.825; pair 2 passes it but fails the likelihood bound
    kept, stats = collator.filter([result(2, 0.9, logp=-6.0), result(3, 0.65), result(4, 0.85)])
    assert [r.index for r in kept] == [4]
    assert stats["confidence_threshold"] == pytest.approx(0.825)
    assert stats["filtered_confidence_rate"] == pytest.approx(1 / 3)
    assert stats["filtered_likelihood_rate"] == pytest.approx(1 / 3)


def test_errors(tiny_paths, tmp_path):
    collator = WestOfNDataCollator(tiny_paths.policy, won_args(), reward_funcs=text_length)
    with pytest.raises(RuntimeError, match="not attached to a trainer"):
        collator([{"prompt": "Hi", PROMPT_ONLY: True}])
    mixed = mix_preferences_and_prompts(toy_preference_dataset(), toy_prompt_dataset())
    with pytest.raises(ValueError, match=r"`dataloader_num_workers=2`.*Set `dataloader_num_workers=0`"):
        WestOfNRewardTrainer(
            model=tiny_paths.reward_model,
            args=reward_args(tmp_path, dataloader_num_workers=2),
            train_dataset=mixed,
            data_collator=collator,
        )
    with pytest.raises(DatasetFormatError, match=r"row \d+, column 'chosen'.*evaluation needs labeled pairs"):
        WestOfNRewardTrainer(
            model=tiny_paths.reward_model,
            args=reward_args(tmp_path),
            train_dataset=mixed,
            eval_dataset=mixed,
            data_collator=collator,
        )
    with pytest.raises(ValueError, match=r"prompt-only rows.*WestOfNDataCollator"):
        WestOfNRewardTrainer(model=tiny_paths.reward_model, args=reward_args(tmp_path), train_dataset=mixed)


def test_labeled_data_trains_exactly_like_reward_trainer(tiny_paths, tmp_path):
    from trl import RewardTrainer

    losses = []
    for trainer_class in (RewardTrainer, WestOfNRewardTrainer):
        model = AutoModelForSequenceClassification.from_pretrained(tiny_paths.reward_model)
        trainer = trainer_class(
            model=model, args=reward_args(tmp_path, max_steps=2, seed=7), train_dataset=toy_preference_dataset()
        )
        trainer.train()
        losses.append([e["loss"] for e in trainer.state.log_history if "loss" in e])
    assert losses[0] == pytest.approx(losses[1])

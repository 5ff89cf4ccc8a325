"""QLoRA reward models train in the model's own dtype without `bf16` (the CPU default), and activation checkpointing is
on or off as configured, under either name."""

import json
import math
from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

from tests.helpers import cpu_training_kwargs
from trl_won.cli.main import main
from trl_won.models import restore_adapter_dtypes
from trl_won.rlaif import RLAIFRewardConfig, RLAIFRewardTrainer
from trl_won.rrhf import RRHFConfig, RRHFTrainer
from trl_won.tiny import toy_preference_dataset, toy_prompt_dataset, toy_ranking_dataset
from trl_won.west_of_n import WestOfNRewardTrainer
from trl_won.west_of_n.mixing import StudentRewardConfig


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_west_of_n_command_trains_a_4bit_student_without_dtype(tiny_paths, tmp_path):
    """`--use_peft --load_in_4bit` and no `--dtype` (float32, bf16 off on the CPU): it trains, the LoRA matrices and
    the score head move, and the saved adapter reloads onto the base model and scores."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", toy_prompt_dataset().to_list()[:3])
    human = write_jsonl(tmp_path / "human.jsonl", toy_preference_dataset().to_list())
    student = tmp_path / "student"
    argv = ["west-of-n", "--policy_name_or_path", tiny_paths.policy, "--reward_model_name_or_path"]
    argv += [tiny_paths.reward_model, "--dataset_name", prompts, "--n", "3", "--max_new_tokens", "6"]
    argv += ["--pairs_dir", str(tmp_path / "pairs"), "--train_student", "--human_dataset_name", human]
    argv += ["--model_name_or_path", tiny_paths.reward_model, "--output_dir", str(student), "--report_to", "none"]
    argv += ["--use_peft", "--lora_task_type", "SEQ_CLS", "--load_in_4bit", "--learning_rate", "1e-2"]
    assert main(argv + ["--max_steps", "2", "--logging_steps", "1"]) == 0

    saved = load_file(student / "adapter_model.safetensors")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_paths.reward_model, num_labels=1)
    (score_name,) = [name for name in saved if "score" in name]
    assert saved[score_name].dtype == torch.float32
    assert not torch.equal(saved[score_name], base.score.weight)  # the score head trained
    assert any(name.endswith("lora_B.weight") and saved[name].abs().sum() > 0 for name in saved)  # B starts at 0

    from peft import PeftModel

    reloaded = PeftModel.from_pretrained(base, str(student)).eval()
    assert torch.equal(reloaded.base_model.model.score.modules_to_save["default"].weight, saved[score_name])
    with torch.no_grad():
        scores = reloaded(input_ids=torch.tensor([[1, 5, 9, 2]])).logits
    assert scores.shape == (1, 1) and torch.isfinite(scores).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("trainer_class", [WestOfNRewardTrainer, RLAIFRewardTrainer])
def test_4bit_reward_trainers_train_in_the_models_dtype_without_bf16(trainer_class, dtype, tiny_paths, tmp_path):
    """Without bf16 the trainable weights keep the dtypes PEFT gave them (LoRA float32, the score head the model's),
    whatever the model's dtype, so the forward pass works and the loss is finite; the quantized base does not move."""
    config_class = RLAIFRewardConfig if trainer_class is RLAIFRewardTrainer else StudentRewardConfig
    args = config_class(
        **cpu_training_kwargs(tmp_path, max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2),
        model_init_kwargs={"dtype": dtype},
    )
    trainer = trainer_class(
        tiny_paths.reward_model,
        args=args,
        train_dataset=toy_preference_dataset(),
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS"),
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype),
    )
    trainable = {name: p for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert {p.dtype for name, p in trainable.items() if "lora_" in name} == {torch.float32}
    assert {p.dtype for name, p in trainable.items() if "score" in name} == {dtype}
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[name], after[name]) for name in trainable if "lora_B" in name)
    assert any(not torch.equal(before[name], after[name]) for name in trainable if "score" in name)
    assert all(torch.equal(before[name], after[name]) for name in before if name not in trainable)


def test_restore_adapter_dtypes_keeps_bf16_training_as_trl_does(tiny_paths, tmp_path):
    """With bf16 on, TRL's QLoRA recipe (bfloat16 adapter weights) is left alone."""
    args = StudentRewardConfig(**cpu_training_kwargs(tmp_path, bf16=True))
    trainer = WestOfNRewardTrainer(
        tiny_paths.reward_model,
        args=args,
        train_dataset=toy_preference_dataset(),
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS"),
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32),
    )
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.bfloat16}
    restore_adapter_dtypes(trainer.model, args)
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.bfloat16}


# ----------------------------------------------------------------------------------------- activation checkpointing


@pytest.mark.parametrize("config_class", [RRHFConfig, RLAIFRewardConfig, StudentRewardConfig])
@pytest.mark.parametrize(
    "given, expected",
    [({}, True), ({"activation_checkpointing": False}, False), ({"gradient_checkpointing": False}, False)]
    + [
        ({"gradient_checkpointing": True}, True),
        ({"activation_checkpointing": False, "gradient_checkpointing": True}, False),
    ],
    ids=["default", "new-name-off", "old-name-off", "old-name-on", "both-new-wins"],
)
def test_checkpointing_flag_as_configured(config_class, given, expected, tmp_path):
    args = config_class(output_dir=str(tmp_path), bf16=False, **given)
    assert args.activation_checkpointing is expected and args.gradient_checkpointing is expected


@pytest.mark.parametrize(
    "flags, expected",
    [([], True), (["--activation_checkpointing", "false"], False)]
    + [(["--gradient_checkpointing", "false"], False), (["--no_gradient_checkpointing"], False)]
    + [(["--no_activation_checkpointing"], False), (["--activation_checkpointing"], True)],
)
def test_command_line_checkpointing_flags(flags, expected, tmp_path):
    from trl_won.cli import rrhf, west_of_n

    for module in (rrhf, west_of_n):
        parsed = module.make_parser().parse_args_and_config(["--output_dir", str(tmp_path), *flags])
        (config,) = [value for value in parsed if hasattr(value, "activation_checkpointing")]
        assert config.activation_checkpointing is expected and config.gradient_checkpointing is expected, module


@pytest.mark.parametrize("enabled", [True, False])
def test_the_trainer_checkpoints_as_configured(enabled, tiny_paths, tmp_path):
    """The trainer turns the model's checkpointing on (default) or off, with LoRA making the inputs require grads."""
    overrides = {} if enabled else {"activation_checkpointing": False}
    kwargs = cpu_training_kwargs(tmp_path, max_steps=1, per_device_train_batch_size=2)
    del kwargs["gradient_checkpointing"]
    trainer = RRHFTrainer(
        tiny_paths.policy,
        args=RRHFConfig(**kwargs, **overrides),
        train_dataset=toy_ranking_dataset(),
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    trainer.train()
    model = trainer.model.get_base_model()
    assert model.is_activation_checkpointing is enabled
    embeddings = model.get_input_embeddings()
    assert bool(embeddings._forward_hooks) is enabled  # PEFT's enable_input_require_grads hook

import json
import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from tests.helpers import StopAtStep, cpu_training_kwargs
from trl_won.data_utils import DatasetFormatError, tokenize_prompt_completion
from trl_won.logprobs import USE_FORWARD
from trl_won.rrhf import RRHFConfig, RRHFTrainer
from trl_won.tiny import toy_ranking_dataset


def make_args(tmp_path, **overrides):
    settings = {
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 4,
        "max_steps": 2,
        "learning_rate": 1e-3,
    }
    return RRHFConfig(**cpu_training_kwargs(tmp_path / "out", **{**settings, **overrides}))


def snapshot(model):
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def changed(before, model, name_filter=lambda name: True):
    return [
        name
        for name, param in model.named_parameters()
        if name_filter(name) and not torch.equal(before[name], param.detach())
    ]


def naive_rrhf_loss(model, tokenizer, dataset, sft_loss_type="mean"):
    """Mean RRHF loss over all rows, from full-vocabulary log-softmax and plain Python loops (paper eq. 1-2)."""
    losses = []
    for example in dataset:
        p, nll = [], []
        for completion in example["completions"]:
            prompt_ids, completion_ids = tokenize_prompt_completion(tokenizer, example["prompt"], completion)
            ids = torch.tensor([prompt_ids + completion_ids])
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            token_logps = [logps[t - 1, ids[0, t]] for t in range(len(prompt_ids), ids.shape[1])]
            p.append(sum(token_logps) / len(token_logps))
            nll.append(-sum(token_logps) / (len(token_logps) if sft_loss_type == "mean" else 1))
        r = example["rewards"]
        rank = sum(max(0.0, p[i] - p[j]) for i in range(len(r)) for j in range(len(r)) if r[i] < r[j])
        best = max(range(len(r)), key=lambda i: (r[i], -i))
        losses.append(rank + nll[best])
    return sum(losses) / len(losses)


@pytest.mark.parametrize("conversational", [False, True])
def test_first_logged_loss_equals_naive_computation(tiny_paths, tokenizer, tmp_path, conversational):
    dataset = toy_ranking_dataset(conversational=conversational)
    model = AutoModelForCausalLM.from_pretrained(tiny_paths.policy)
    with torch.no_grad():
        expected = float(naive_rrhf_loss(model, tokenizer, dataset))
    # One step over the whole dataset: the logged loss is the mean over all prompts, whatever their order.
    args = make_args(tmp_path, per_device_train_batch_size=len(dataset), max_steps=1)
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset)
    before = snapshot(trainer.model)
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["loss"] == pytest.approx(expected, rel=1e-5)
    assert log["loss"] == pytest.approx(log["rank_loss"] + log["sft_loss"], rel=1e-5)
    assert 0.0 <= log["ranking_accuracy"] <= 1.0
    assert log["logps/best"] == pytest.approx(-log["sft_loss"], rel=1e-5)  # length_penalty=1: p of best = -NLL
    assert math.isfinite(log["logps/worst"])
    assert len(changed(before, trainer.model)) == len(before)


@pytest.mark.parametrize("batch_size, accumulation", [(2, 2), (1, 4)])
def test_loss_and_update_do_not_depend_on_micro_batching(tiny_paths, tmp_path, batch_size, accumulation):
    dataset = toy_ranking_dataset().select(range(4))

    def run(bs, ga):
        args = make_args(
            tmp_path, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, max_steps=1, optim="sgd"
        )
        trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset)
        trainer.train()
        return trainer.state.log_history[0]["loss"], snapshot(trainer.model)

    reference_loss, reference = run(4, 1)
    loss, params = run(batch_size, accumulation)
    assert loss == pytest.approx(reference_loss, rel=1e-5)
    for name, value in params.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-6)


def test_eval_metrics_and_gradient_checkpointing(tiny_paths, tmp_path):
    dataset = toy_ranking_dataset()
    plain = RRHFTrainer(tiny_paths.policy, args=make_args(tmp_path, max_steps=1), train_dataset=dataset)
    args = make_args(tmp_path, max_steps=1, gradient_checkpointing=True)
    checkpointed = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset, eval_dataset=dataset)
    plain.train()
    checkpointed.train()
    assert checkpointed.state.log_history[0]["loss"] == pytest.approx(plain.state.log_history[0]["loss"], rel=1e-5)
    metrics = checkpointed.evaluate()
    for key in ("eval_loss", "eval_rank_loss", "eval_sft_loss", "eval_ranking_accuracy", "eval_logps/best"):
        assert math.isfinite(metrics[key])


def test_lm_head_only_sees_completion_tokens(tiny_paths, tmp_path):
    dataset = toy_ranking_dataset()
    args = make_args(tmp_path, max_steps=1, logprob_chunk_size=16)
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset, eval_dataset=dataset)
    # The first selective forward compares the shortcut once with the model's own forward (full logits of <= 16
    # tokens of one row); let it happen before counting what the LM head sees.
    row = trainer.train_dataset[0]
    ids = torch.tensor([row["prompt_ids"] + row["completion_ids"][0]])
    trainer.model(input_ids=ids, attention_mask=torch.ones_like(ids), logprob_mask=torch.ones_like(ids))
    assert trainer.model._trl_won_logprob_path != USE_FORWARD  # and the shortcut is taken
    shapes = []
    trainer.model.get_output_embeddings().register_forward_hook(lambda m, args, out: shapes.append(args[0].shape))
    trainer.evaluate()
    completion_tokens = sum(len(ids) for row in trainer.eval_dataset["completion_ids"] for ids in row)
    all_tokens = sum(
        len(p) + len(ids)
        for p, row in zip(trainer.eval_dataset["prompt_ids"], trainer.eval_dataset["completion_ids"])
        for ids in row
    )
    assert all(len(shape) == 2 and shape[0] <= 16 for shape in shapes)  # (tokens, hidden) chunks, never (B, L, H)
    assert sum(shape[0] for shape in shapes) == completion_tokens < all_tokens
    shapes.clear()
    trainer.train()
    assert shapes and all(len(shape) == 2 and shape[0] <= 16 for shape in shapes)


LENGTH_REWARD_CALLS = []


def length_reward(prompts, completions, **kwargs):
    LENGTH_REWARD_CALLS.append(len(completions))
    return [float(len(c)) for c in completions]


def test_rewards_are_computed_once_from_reward_funcs(tiny_paths, tmp_path):
    LENGTH_REWARD_CALLS.clear()
    dataset = toy_ranking_dataset(with_rewards=False)
    args = make_args(tmp_path, max_steps=1)
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset, reward_funcs=length_reward)
    expected = [[float(len(c)) for c in row] for row in dataset["completions"]]
    assert trainer.train_dataset["rewards"] == expected
    assert sum(LENGTH_REWARD_CALLS) == sum(len(row) for row in dataset["completions"])
    # A rerun in the same output dir reuses the saved scores instead of paying for them again.
    RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset, reward_funcs=length_reward)
    assert sum(LENGTH_REWARD_CALLS) == sum(len(row) for row in dataset["completions"])
    trainer.train()


def test_rewards_from_a_reward_model_path_and_weights(tiny_paths, tmp_path):
    from trl_won.rewards import RewardModelScorer

    dataset = toy_ranking_dataset(with_rewards=False).select(range(2))
    args = make_args(tmp_path, max_steps=1, reward_weights=[2.0, 1.0])
    trainer = RRHFTrainer(
        tiny_paths.policy,
        args=args,
        train_dataset=dataset,
        reward_funcs=[tiny_paths.reward_model, lambda prompts, completions: [1.0] * len(completions)],
    )
    scorer = RewardModelScorer(tiny_paths.reward_model)
    for example, rewards in zip(dataset, trainer.train_dataset["rewards"]):
        scores = scorer([example["prompt"]] * len(example["completions"]), example["completions"])
        assert rewards == pytest.approx([2.0 * s + 1.0 for s in scores], abs=1e-5)


def test_reward_source_errors(tiny_paths, tmp_path):
    args = make_args(tmp_path)
    with pytest.raises(DatasetFormatError, match="no 'rewards' column and no `reward_funcs`"):
        RRHFTrainer(tiny_paths.policy, args=args, train_dataset=toy_ranking_dataset(with_rewards=False))
    with pytest.raises(ValueError, match="already has a 'rewards' column and `reward_funcs`"):
        RRHFTrainer(
            tiny_paths.policy, args=args, train_dataset=toy_ranking_dataset(), reward_funcs=lambda p, c: [0.0] * len(c)
        )
    with pytest.raises(ValueError, match=r"'nan_reward' returned nan for completion 0"):

        def nan_reward(prompts, completions):
            return [math.nan] * len(completions)

        RRHFTrainer(
            tiny_paths.policy,
            args=args,
            train_dataset=toy_ranking_dataset(with_rewards=False),
            reward_funcs=nan_reward,
        )


@pytest.mark.parametrize(
    "rows, pattern",
    [
        ({"prompt": ["Q"], "completions": [["a", "b"]]}, r"no 'rewards' column"),
        ({"prompt": ["Q"], "rewards": [[1.0, 0.0]]}, r"no column 'completions'"),
        (
            {"prompt": ["Q", "R"], "completions": [["a", "b"], ["c"]], "rewards": [[1, 0], [1]]},
            r"row 1, column 'completions'",
        ),
        ({"prompt": ["Q"], "completions": [["a", "b"]], "rewards": [[1.0, 0.0, 2.0]]}, r"row 0, column 'rewards'"),
        (
            {"prompt": ["Q"], "completions": [["a", "b"]], "rewards": [[1.0, math.nan]]},
            r"row 0, column 'rewards\[1\]'",
        ),
        ({"prompt": ["Q"], "completions": [["a", ""]], "rewards": [[1.0, 0.0]]}, r"row 0, column 'completions\[1\]'"),
        (
            {"prompt": ["Q" * 50], "completions": [["a", "b"]], "rewards": [[1.0, 0.0]]},
            r"row 0, column 'prompt'.*max_length=8",
        ),
    ],
)
def test_bad_datasets_are_rejected_at_construction(tiny_paths, tmp_path, rows, pattern):
    with pytest.raises(ValueError, match=pattern):
        RRHFTrainer(tiny_paths.policy, args=make_args(tmp_path, max_length=8), train_dataset=Dataset.from_dict(rows))


def test_lora_trains_only_the_adapter(tiny_paths, tmp_path):
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = RRHFTrainer(
        tiny_paths.policy,
        args=make_args(tmp_path, gradient_checkpointing=True),
        train_dataset=toy_ranking_dataset(),
        peft_config=peft_config,
    )
    before = snapshot(trainer.model)
    trainer.train()
    assert changed(before, trainer.model, lambda n: "lora_B" in n)
    assert not changed(before, trainer.model, lambda n: "lora_" not in n)


@pytest.mark.parametrize(
    "quantization",
    [
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
        BitsAndBytesConfig(load_in_8bit=True),
    ],
    ids=["4bit", "8bit"],
)
def test_quantized_lora(tiny_paths, tmp_path, quantization):
    trainer = RRHFTrainer(
        tiny_paths.policy,
        args=make_args(tmp_path),
        train_dataset=toy_ranking_dataset(conversational=True),
        quantization_config=quantization,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.model.get_base_model().is_quantized
    before = snapshot(trainer.model)
    trainer.train()
    assert changed(before, trainer.model, lambda n: "lora_B" in n)
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_quantization_needs_a_model_path(policy, tmp_path):
    with pytest.raises(ValueError, match="already instantiated"):
        RRHFTrainer(
            policy,
            args=make_args(tmp_path),
            train_dataset=toy_ranking_dataset(),
            quantization_config=BitsAndBytesConfig(load_in_4bit=True),
        )


def test_model_card_on_save(tiny_paths, tmp_path):
    trainer = RRHFTrainer(
        tiny_paths.policy, args=make_args(tmp_path, max_steps=1), train_dataset=toy_ranking_dataset()
    )
    trainer.train()
    trainer.save_model()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "RRHF" in card and "2304.05302" in card and "yuan2023rrhf" in card
    assert "trl-won" in json.dumps(card)
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    for name, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, trainer.model.state_dict()[name])


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tiny_paths, tmp_path):
    dataset = toy_ranking_dataset()

    def args(name):
        return make_args(tmp_path / name, max_steps=4, save_strategy="steps", save_steps=2)

    full = RRHFTrainer(tiny_paths.policy, args=args("full"), train_dataset=dataset)
    full.train()
    crashed = RRHFTrainer(tiny_paths.policy, args=args("resumed"), train_dataset=dataset, callbacks=[StopAtStep(2)])
    crashed.train()
    assert crashed.state.global_step == 2
    resumed = RRHFTrainer(tiny_paths.policy, args=args("resumed"), train_dataset=dataset)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "out" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    assert not torch.equal(crashed.model.lm_head.weight, resumed.model.lm_head.weight)
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, full.model.state_dict()[name])


def test_saved_rewards_are_not_reused_for_a_different_reward_model(tiny_paths, tmp_path):
    """Two reward models loaded from the same path but with different weights must not share saved scores."""
    from transformers import AutoModelForSequenceClassification

    from trl_won.rewards import RewardModelScorer

    dataset = toy_ranking_dataset(with_rewards=False).select(range(2))
    args = make_args(tmp_path, max_steps=1)
    first = AutoModelForSequenceClassification.from_pretrained(tiny_paths.reward_model)
    second = AutoModelForSequenceClassification.from_pretrained(tiny_paths.reward_model)
    with torch.no_grad():
        second.score.weight.mul_(-1.0)
    rewards_first = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset, reward_funcs=first)
    rewards_second = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset, reward_funcs=second)
    expected = RewardModelScorer(second)(
        [dataset[0]["prompt"]] * len(dataset[0]["completions"]), dataset[0]["completions"]
    )
    assert rewards_second.train_dataset["rewards"][0] == pytest.approx(expected, abs=1e-5)
    assert rewards_second.train_dataset["rewards"] != rewards_first.train_dataset["rewards"]


def test_rewards_of_unidentifiable_functions_are_not_saved(tiny_paths, tmp_path):
    scale = torch.tensor(2.0)  # a closure over an object: a changed version would look the same

    def scaled_length(prompts, completions):
        return [float(scale) * len(c) for c in completions]

    args = make_args(tmp_path, max_steps=1)
    RRHFTrainer(
        tiny_paths.policy, args=args, train_dataset=toy_ranking_dataset(with_rewards=False), reward_funcs=scaled_length
    )
    assert not list((tmp_path / "out").glob("rrhf_rewards-*.json"))


def test_sft_loss_type_sum_is_the_papers_summed_nll(tiny_paths, tokenizer, tmp_path):
    dataset = toy_ranking_dataset()
    model = AutoModelForCausalLM.from_pretrained(tiny_paths.policy)
    with torch.no_grad():
        expected = float(naive_rrhf_loss(model, tokenizer, dataset, sft_loss_type="sum"))
        assert expected > float(naive_rrhf_loss(model, tokenizer, dataset)) + 1.0  # the two reductions differ here
    args = make_args(tmp_path, per_device_train_batch_size=len(dataset), max_steps=1, sft_loss_type="sum")
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset)
    trainer.train()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="sft_loss_type"):
        make_args(tmp_path, sft_loss_type="token_mean")

"""Online RRHF: sampling from the policy during training, GRPO's reward-function calls, and their equivalences."""

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from safetensors.torch import load_file
from torch.utils.data import SequentialSampler
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TrainerState

from tests.helpers import StopAtStep, cpu_training_kwargs
from tests.rlaif_helpers import LengthScorer
from trl_won.data_utils import DatasetFormatError, completion_text
from trl_won.generation import prompt_ids_for_generation, sample_completions
from trl_won.rewards import RewardFunctionError
from trl_won.rlaif import judge_reward_func
from trl_won.rrhf import RRHFConfig, RRHFTrainer
from trl_won.rrhf.online import sampling_params
from trl_won.tiny import TOY_PROMPTS, toy_prompt_dataset
from trl_won.utils import derived_seed


K = 3  # samples per prompt


def online_args(tmp_path, **overrides):
    settings = {
        "per_device_train_batch_size": 2,
        "max_steps": 1,
        "learning_rate": 1e-3,
        "num_generations": K,
        "max_completion_length": 6,
    }
    return RRHFConfig(**cpu_training_kwargs(tmp_path / "out", **{**settings, **overrides}))


class Recorder:
    """A reward function that records every call (its keyword arguments) and scores by the completion's token ids."""

    def __init__(self, name="token_sum_reward"):
        self.calls = []
        self.__name__ = name

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        self.calls.append({"prompts": prompts, "completions": completions, "completion_ids": completion_ids, **kwargs})
        return [float(sum(ids) % 101) for ids in completion_ids]


def snapshot(model):
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def unchanged(before, model):
    return [name for name, param in model.named_parameters() if name in before and torch.equal(before[name], param)]


def groups(call, sizes):
    """Cut a call's flat lists into per-prompt groups of `sizes`."""
    out, start = [], 0
    for size in sizes:
        out.append({key: values[start : start + size] for key, values in call.items() if isinstance(values, list)})
        start += size
    return out


# ----- equivalences -----


def test_candidates_equal_sample_completions_with_the_round_seed(tiny_paths, tokenizer, tmp_path):
    recorder = Recorder()
    # Conversational prompts, GRPO's default sampling settings, gradient checkpointing on (RRHF's default).
    args = online_args(tmp_path, gradient_checkpointing=True, max_completion_length=8, seed=3)
    dataset = toy_prompt_dataset(conversational=True)
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset, reward_funcs=recorder)
    trainer.train()
    call = recorder.calls[0]
    prompts = call["prompts"][::K]
    assert len(prompts) == 2 and all(call["prompts"][i] == prompts[i // K] for i in range(2 * K))
    reference = sample_completions(
        AutoModelForCausalLM.from_pretrained(tiny_paths.policy),
        tokenizer,
        prompts,
        K,
        sampling_params(trainer.args),
        batch_size=2 * K,
        seed=derived_seed(3, 0, 0),
        share_prompt=True,
    )
    assert call["completion_ids"] == [sample.token_ids for samples in reference for sample in samples]
    assert call["completions"] == [[{"role": "assistant", "content": s.text}] for ss in reference for s in ss]
    assert len(set(map(tuple, call["completion_ids"]))) > 1  # sampled, not greedy
    log = trainer.state.log_history[0]
    lengths = [len(ids) for ids in call["completion_ids"]]
    assert log["completions/mean_length"] == pytest.approx(sum(lengths) / len(lengths))
    assert (log["completions/min_length"], log["completions/max_length"]) == (min(lengths), max(lengths))
    clipped = [not s.finished for ss in reference for s in ss]
    assert log["completions/clipped_ratio"] == pytest.approx(sum(clipped) / len(clipped))
    rewards = torch.tensor([float(sum(ids) % 101) for ids in call["completion_ids"]])
    assert log["rewards/token_sum_reward/mean"] == pytest.approx(rewards.mean().item())
    assert log["rewards/token_sum_reward/std"] == pytest.approx(rewards.std().item(), rel=1e-5)
    for key in ("reward", "reward_std", "ranking_accuracy", "logps/best", "logps/worst", "rank_loss", "sft_loss"):
        assert math.isfinite(log[key]), key


def test_one_online_step_equals_an_offline_step_on_the_same_candidates(tiny_paths, tokenizer, tmp_path):
    # A mixed pool: row 0 carries 2 fixed completions, ranked with its samples; row 1 none.
    dataset = Dataset.from_dict(
        {"prompt": TOY_PROMPTS[:2], "completions": [[" The cat sat.", " A mat."], []], "answer": ["cat", "Paris"]}
    )
    recorder = Recorder()
    args = online_args(tmp_path / "online", optim="sgd")
    online = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset, reward_funcs=recorder)
    online.train()
    call = recorder.calls[0]
    assert call["answer"] == ["cat"] * (2 + K) + ["Paris"] * K  # the dataset's other columns, one per candidate
    first = call["prompts"][0]
    sizes = [2 + K, K] if first == TOY_PROMPTS[0] else [K, 2 + K]
    rows = []
    for group in groups(call, sizes):
        prompt = group["prompts"][0]
        if prompt == TOY_PROMPTS[0]:
            assert group["completions"][:2] == [" The cat sat.", " A mat."]  # fixed completions first
        rows.append(
            {
                "prompt_ids": prompt_ids_for_generation(tokenizer, prompt),
                "completion_ids": group["completion_ids"],
                "rewards": [float(sum(ids) % 101) for ids in group["completion_ids"]],
            }
        )
    offline_args = online_args(tmp_path / "offline", optim="sgd", num_generations=0)
    offline = RRHFTrainer(tiny_paths.policy, args=offline_args, train_dataset=Dataset.from_list(rows))
    offline._get_train_sampler = lambda *args: SequentialSampler(offline.train_dataset)  # the online order
    offline.train()

    online_log, offline_log = online.state.log_history[0], offline.state.log_history[0]
    assert online_log["loss"] == offline_log["loss"] and online_log["rank_loss"] > 0
    for name, param in offline.model.named_parameters():
        assert torch.equal(online.model.get_parameter(name), param), name


def test_resume_mid_generation_round_equals_an_uninterrupted_run(tiny_paths, tmp_path, caplog):
    # A round of 4 micro-batches (steps_per_generation=4) spans 2 optimizer steps (gradient_accumulation_steps=2);
    # checkpoint-1 is saved in the middle of the first round.
    def args(name):
        return online_args(
            tmp_path / name,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=2,
            steps_per_generation=4,
            max_steps=4,
            save_strategy="steps",
            save_steps=1,
        )

    def trainer(name, callbacks=None):
        dataset = toy_prompt_dataset()
        return RRHFTrainer(
            tiny_paths.policy, args=args(name), train_dataset=dataset, reward_funcs=Recorder(), callbacks=callbacks
        )

    full = trainer("full")
    full.train()
    crashed = trainer("resumed", callbacks=[StopAtStep(1)])
    crashed.train()
    checkpoint = tmp_path / "resumed" / "out" / "checkpoint-1"
    assert (checkpoint / "rrhf_generation_buffer-0.pt").exists()
    resumed = trainer("resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    for name, param in full.model.named_parameters():
        assert torch.equal(resumed.model.get_parameter(name), param), name

    # Without the buffer (a checkpoint from elsewhere) the round is sampled again from the resumed weights, with a
    # warning that the run may differ from an uninterrupted one.
    os.remove(checkpoint / "rrhf_generation_buffer-0.pt")
    with caplog.at_level("WARNING", logger="trl_won.rrhf.online"):
        trainer("resampled").train(resume_from_checkpoint=str(checkpoint))
    assert "has no generation buffer" in caplog.text and "sampling the round again" in caplog.text


@pytest.mark.parametrize("stop", [4, 5], ids=["epoch-boundary", "mid-epoch-1"])
def test_resume_in_a_later_epoch_equals_an_uninterrupted_run(tiny_paths, tmp_path, stop):
    # 8 prompts, 2 per step: 4 steps per epoch, 2 epochs, each epoch shuffled. checkpoint-4 ends epoch 0, checkpoint-5
    # is in epoch 1: a resumed run must see epoch 1's prompts in the uninterrupted run's order (it saw epoch 0's).
    def run(name, callbacks=None, resume=None):
        args = online_args(
            tmp_path / name, max_steps=-1, num_train_epochs=2, save_strategy="steps", save_steps=1, seed=1
        )
        recorder = Recorder()
        trainer = RRHFTrainer(
            tiny_paths.policy,
            args=args,
            train_dataset=toy_prompt_dataset(),
            reward_funcs=recorder,
            callbacks=callbacks,
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer, [call["prompts"][::K] for call in recorder.calls]

    full, full_prompts = run("full")
    assert len(full_prompts) == 8 and full.state.global_step == 8
    epochs = [[p for prompts in full_prompts[e * 4 : (e + 1) * 4] for p in prompts] for e in (0, 1)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(TOY_PROMPTS) and epochs[0] != epochs[1]
    run("resumed", callbacks=[StopAtStep(stop)])
    resumed, resumed_prompts = run("resumed", resume=str(tmp_path / "resumed" / "out" / f"checkpoint-{stop}"))
    assert resumed.state.global_step == 8
    assert resumed_prompts == full_prompts[stop:]
    for name, param in full.model.named_parameters():
        assert torch.equal(resumed.model.get_parameter(name), param), name


LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
LAUNCH += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def test_two_processes_sample_their_own_prompts_and_match_one_process(tiny_paths, tokenizer, tmp_path):
    script = Path(__file__).parent / "scripts" / "rrhf_online_distributed.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [*LAUNCH, str(script), "--model", tiny_paths.policy, "--output_dir", str(tmp_path / "two")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    model = AutoModelForCausalLM.from_pretrained(tiny_paths.policy)
    params = RRHFConfig(**cpu_training_kwargs(tmp_path, max_completion_length=6))
    rows, samples = [], []
    for rank in (0, 1):
        saved = json.loads((tmp_path / "two" / f"calls-{rank}.json").read_text())
        assert saved["num_processes"] == 2
        call = saved["calls"][0]
        prompts = call["prompts"][::K]
        # Each process samples its own 2 prompts with its own seed, derived_seed(seed, round, process_index).
        expected = sample_completions(
            model,
            tokenizer,
            prompts,
            K,
            sampling_params(params),
            batch_size=2 * K,
            seed=derived_seed(0, 0, rank),
            share_prompt=True,
        )
        assert call["completion_ids"] == [s.token_ids for ss in expected for s in ss]
        samples.append(call["completion_ids"])
        for group in groups(call, [K, K]):
            rows.append(
                {
                    "prompt_ids": prompt_ids_for_generation(tokenizer, group["prompts"][0]),
                    "completion_ids": group["completion_ids"],
                    "rewards": [float(sum(ids) % 101) for ids in group["completion_ids"]],
                }
            )
    assert len({prompt for row in rows for prompt in [tuple(row["prompt_ids"])]}) == 4  # 4 different prompts
    assert samples[0] != samples[1]

    # One process, offline, on the 4 groups the two processes sampled: the same step.
    args = RRHFConfig(
        **cpu_training_kwargs(
            tmp_path / "one", per_device_train_batch_size=4, max_steps=1, learning_rate=1e-3, optim="sgd"
        )
    )
    one = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=Dataset.from_list(rows))
    one.train()
    weights = load_file(tmp_path / "two" / "model.safetensors")
    for name, value in one.model.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_two_processes_with_one_micro_batch_skipped_equal_one_process_on_the_other(tiny_paths, tokenizer, tmp_path):
    # Process 0's reward function returns None for all of its candidates: its micro-batch is empty. It must still take
    # part in the gradient all-reduce and the metrics gather (it hung there), and the step must be the one of the
    # other process's prompts alone.
    script = Path(__file__).parent / "scripts" / "rrhf_online_distributed.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [*LAUNCH, str(script), "--model", tiny_paths.policy, "--output_dir", str(tmp_path / "two")]
    command += ["--none_on_rank", "0"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    call = json.loads((tmp_path / "two" / "calls-1.json").read_text())["calls"][0]
    rows = [
        {
            "prompt_ids": prompt_ids_for_generation(tokenizer, group["prompts"][0]),
            "completion_ids": group["completion_ids"],
            "rewards": [float(sum(ids) % 101) for ids in group["completion_ids"]],
        }
        for group in groups(call, [K, K])
    ]
    args = RRHFConfig(
        **cpu_training_kwargs(
            tmp_path / "one", per_device_train_batch_size=2, max_steps=1, learning_rate=1e-3, optim="sgd"
        )
    )
    one = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=Dataset.from_list(rows))
    one._get_train_sampler = lambda *args: SequentialSampler(one.train_dataset)
    one.train()
    weights = load_file(tmp_path / "two" / "model.safetensors")
    before = AutoModelForCausalLM.from_pretrained(tiny_paths.policy).state_dict()
    assert any(not torch.equal(weights[name], value) for name, value in before.items())  # it trained
    for name, value in one.model.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "adapter",
    [
        None,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        "qlora",
    ],
    ids=["full", "lora", "qlora-4bit"],
)
def test_gradient_accumulation_lora_and_qlora_train_every_parameter(tiny_paths, tmp_path, adapter):
    quantization = None
    if adapter == "qlora":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
        adapter = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    # 2 optimizer steps (LoRA's A matrices move once B is no longer 0), 2 micro-batches each.
    args = online_args(tmp_path, per_device_train_batch_size=1, gradient_accumulation_steps=2, max_steps=2)
    trainer = RRHFTrainer(
        tiny_paths.policy,
        args=args,
        train_dataset=toy_prompt_dataset(),
        reward_funcs=Recorder(),
        peft_config=adapter,
        quantization_config=quantization,
    )
    before = {
        name: p for name, p in snapshot(trainer.model).items() if trainer.model.get_parameter(name).requires_grad
    }
    trainer.train()
    assert before and not unchanged(before, trainer.model)
    assert (trainer.args.steps_per_generation, trainer.args.generation_batch_size) == (2, 1 * 1 * 2 * K)
    if adapter is not None:
        assert all("lora_" in name for name in before)


def test_gradient_accumulation_gives_the_step_of_one_large_batch(tiny_paths, tmp_path):
    # The same round (2 prompts, one sampling call, same seed) trained as 1 micro-batch of 2 or 2 of 1: the loss is
    # scaled for gradient accumulation by `compute_loss` (`loss_is_scaled_for_ga`), so the steps agree.
    def run(name, batch_size, accumulation):
        args = online_args(
            tmp_path / name,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
        )
        trainer = RRHFTrainer(
            tiny_paths.policy,
            args=args,
            train_dataset=toy_prompt_dataset(),
            reward_funcs=Recorder(),
            optimizers=(None, None),
        )
        trainer.train()
        return trainer

    assert RRHFTrainer.loss_is_scaled_for_ga is True
    one, accumulated = run("one", 2, 1), run("accumulated", 1, 2)
    assert one.state.log_history[0]["loss"] == pytest.approx(accumulated.state.log_history[0]["loss"], rel=1e-6)
    for name, param in one.model.named_parameters():
        torch.testing.assert_close(accumulated.model.get_parameter(name), param, rtol=1e-5, atol=1e-6)


# ----- reward functions as GRPO calls them -----


def train_one_round(tiny_paths, tmp_path, reward_funcs, dataset=None, **overrides):
    args = online_args(tmp_path, **overrides)
    dataset = dataset if dataset is not None else toy_prompt_dataset()
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=dataset, reward_funcs=reward_funcs)
    trainer.train()
    return trainer


def test_reward_functions_get_grpo_arguments_none_async_and_weights(tiny_paths, tmp_path):
    recorder = Recorder()
    seen = {}

    def sometimes_none(prompts, completions, **kwargs):  # "does not apply" to the first candidate of every prompt
        seen.update(kwargs)
        return [None if i % K == 0 else float(len(completion_text(c))) for i, c in enumerate(completions)]

    async def async_length(prompts, completions, completion_ids, **kwargs):
        await asyncio.sleep(0)
        return [float(len(ids)) for ids in completion_ids]

    weights = [1.0, 0.5, -2.0]
    trainer = train_one_round(
        tiny_paths,
        tmp_path,
        [recorder, sometimes_none, async_length],
        dataset=toy_prompt_dataset().add_column("topic", [f"t{i}" for i in range(8)]),
        reward_weights=weights,
    )
    assert set(seen) >= {"completion_ids", "topic", "trainer_state"} and "_rrhf_row" not in seen
    assert isinstance(seen["trainer_state"], TrainerState)
    call = recorder.calls[0]
    ids = call["completion_ids"]
    expected = []
    for i, c in enumerate(call["completions"]):
        token_sum, length = float(sum(ids[i]) % 101), float(len(completion_text(c)))
        terms = [weights[0] * token_sum, weights[2] * float(len(ids[i]))]
        if i % K != 0:
            terms.insert(1, weights[1] * length)
        expected.append(sum(terms))
    buffer = trainer._generation_buffer[0]
    assert buffer["rewards"].tolist() == pytest.approx(expected)
    log = trainer.state.log_history[0]
    lengths = torch.tensor([len(completion_text(c)) for i, c in enumerate(call["completions"]) if i % K != 0])
    assert log["rewards/sometimes_none/mean"] == pytest.approx(lengths.float().mean().item())
    assert log["rewards/async_length/mean"] == pytest.approx(sum(map(len, ids)) / len(ids))


def test_unscorable_candidates_are_dropped_and_groups_skipped(tiny_paths, tmp_path, caplog):
    def none_for_the_first_prompt(prompts, completions, **kwargs):
        first = prompts[0]
        return [None if p == first else float(len(completion_text(c))) for p, c in zip(prompts, completions)]

    def none_for_one_candidate(prompts, completions, **kwargs):
        return [None if i == len(completions) - 1 else 1.0 for i in range(len(completions))]

    trainer = train_one_round(tiny_paths, tmp_path, [none_for_the_first_prompt], max_steps=2)
    assert trainer.state.log_history[-2]["skipped_groups"] == 2  # one group per round, 2 rounds
    assert "fewer than 2 candidates with a reward" in caplog.text
    assert trainer._generation_buffer[0]["num_completions"].tolist() == [K]  # the other group is trained on

    trainer = train_one_round(tiny_paths, tmp_path / "one", [none_for_one_candidate])
    assert trainer._generation_buffer[0]["num_completions"].tolist() == [K, K - 1]  # the last candidate is dropped


def test_every_group_skipped_trains_nothing(tiny_paths, tmp_path):
    args = online_args(tmp_path)
    trainer = RRHFTrainer(
        tiny_paths.policy,
        args=args,
        train_dataset=toy_prompt_dataset(),
        reward_funcs=lambda prompts, completions, **kwargs: [None] * len(prompts),
    )
    before = snapshot(trainer.model)
    trainer.train()
    assert len(unchanged(before, trainer.model)) == len(before)
    assert trainer.state.log_history[0]["skipped_groups"] == 2


def test_dataset_columns_of_any_name_reach_the_reward_functions(tiny_paths, tmp_path):
    # GRPO passes every dataset column to the reward functions; a column named like an argument of the scoring helper
    # ("where", "batch_description") crashed with "got multiple values for keyword argument".
    columns = {"where": ["here", "there"], "batch_description": ["a", "b"], "reward_funcs": [1, 2]}
    dataset = Dataset.from_dict({"prompt": TOY_PROMPTS[:2], **columns})
    recorder = Recorder()
    RRHFTrainer(tiny_paths.policy, args=online_args(tmp_path), train_dataset=dataset, reward_funcs=recorder).train()
    call = recorder.calls[0]
    first = 0 if call["prompts"][0] == TOY_PROMPTS[0] else 1
    for name, values in columns.items():
        assert call[name] == [values[first]] * K + [values[1 - first]] * K, name


@pytest.mark.parametrize("sharding", ["fsdp", "zero3"])
def test_sampling_with_transformers_under_fsdp_or_zero3_is_refused(tiny_paths, tmp_path, monkeypatch, sharding):
    trainer = RRHFTrainer(
        tiny_paths.policy, args=online_args(tmp_path), train_dataset=toy_prompt_dataset(), reward_funcs=Recorder()
    )
    if sharding == "fsdp":
        trainer.is_fsdp_enabled = True
    else:
        monkeypatch.setattr("trl_won.rrhf.online.is_deepspeed_zero3_enabled", lambda: True)
    name = "FSDP" if sharding == "fsdp" else "DeepSpeed ZeRO-3"
    with pytest.raises(NotImplementedError, match=f"under {name} holds only a shard.*use_vllm=True"):
        trainer._init_online()


@pytest.mark.parametrize(
    "reward, message",
    [
        (lambda prompts, completions, **kwargs: [1.0], r"'<lambda>' failed .*returned 1 scores for 6 completions"),
        (lambda prompts, completions, **kwargs: 1 / 0, r"'<lambda>' failed .*ZeroDivisionError"),
        (lambda prompts, completions, **kwargs: [math.inf] * len(prompts), r"'<lambda>' failed .*inf"),
    ],
    ids=["wrong-count", "raises", "not-finite"],
)
def test_a_failing_reward_function_stops_the_run_naming_it_and_the_batch(tiny_paths, tmp_path, reward, message):
    trainer = RRHFTrainer(
        tiny_paths.policy, args=online_args(tmp_path), train_dataset=toy_prompt_dataset(), reward_funcs=reward
    )
    before = snapshot(trainer.model)
    with pytest.raises(RewardFunctionError, match=message) as error:
        trainer.train()
    assert "step 1 (generation round 0, dataset rows [" in str(error.value)
    assert len(unchanged(before, trainer.model)) == len(before)  # nothing trained on a partial reward


def test_async_reward_function_failing_is_named(tiny_paths, tmp_path):
    async def broken_judge(prompts, completions, **kwargs):
        raise ConnectionError("judge server down")

    trainer = RRHFTrainer(
        tiny_paths.policy, args=online_args(tmp_path), train_dataset=toy_prompt_dataset(), reward_funcs=broken_judge
    )
    with pytest.raises(RewardFunctionError, match=r"'broken_judge' failed on step 1 .*judge server down"):
        trainer.train()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_rlaif_scoring_judge_through_the_adapter(tiny_paths, tmp_path, asynchronous):
    judge = LengthScorer()
    recorder = Recorder()
    reward = judge_reward_func(judge, asynchronous=asynchronous, name="length_judge")
    trainer = train_one_round(tiny_paths, tmp_path, [reward, recorder], reward_weights=[1.0, 0.0])
    assert judge.calls >= 1
    completions = recorder.calls[0]["completions"]
    expected = [j.score for j in LengthScorer().score_completions(recorder.calls[0]["prompts"], completions)]
    expected = [0.0 if score is None else score for score in expected]  # the recorder scores it (weight 0)
    assert trainer._generation_buffer[0]["rewards"].tolist() == pytest.approx(expected)
    assert "rewards/length_judge/mean" in trainer.state.log_history[0]


def test_log_completions_and_reward_function_logs(tiny_paths, tmp_path, capsys):
    def logging_reward(prompts, completions, log_extra, log_metric, **kwargs):  # GRPO's logging hooks
        log_extra("verdict", [f"v{i}" for i in range(len(completions))])
        log_metric("judge/calls", 3.0)
        return [1.0] * len(completions)

    trainer = train_one_round(
        tiny_paths, tmp_path, [Recorder("scored"), logging_reward], log_completions=True, num_completions_to_print=2
    )
    out = capsys.readouterr().out
    assert "scored" in out and "reward" in out and "Step 1" in out and "verdict" in out
    assert trainer.state.log_history[0]["judge/calls"] == 3.0


# ----- configuration and bad input -----


def test_generation_batch_size_counts_completions_as_in_grpo(tmp_path):
    def config(**kwargs):
        return RRHFConfig(**cpu_training_kwargs(tmp_path, per_device_train_batch_size=2, **kwargs))

    # 24 completions of 3 per prompt = 8 prompts = 4 micro-batches of 2 prompts.
    assert config(num_generations=3, generation_batch_size=24).steps_per_generation == 4
    derived = config(num_generations=4, gradient_accumulation_steps=3)
    assert (derived.steps_per_generation, derived.generation_batch_size) == (3, 2 * 3 * 4)
    offline = config()
    assert (offline.num_generations, offline.generation_batch_size, offline.steps_per_generation) == (None, None, 1)
    with pytest.raises(ValueError, match=r"generation_batch_size \(10\) counts completions"):
        config(num_generations=3, generation_batch_size=10)
    with pytest.raises(ValueError, match="can not be both configured"):
        config(generation_batch_size=16, steps_per_generation=2)
    for bad in (1, -1):
        with pytest.raises(ValueError, match=r"`num_generations` must be 0 \(offline RRHF\) or at least 2"):
            config(num_generations=bad)


def test_sampling_params_carry_grpo_generation_settings(tmp_path):
    args = RRHFConfig(
        **cpu_training_kwargs(tmp_path, num_generations=2, temperature=0.8, top_p=0.9, top_k=5, min_p=0.05),
        max_completion_length=7,
        repetition_penalty=1.2,
        generation_kwargs={"top_k": 3, "suppress_tokens": [4]},
    )
    assert sampling_params(args).generate_kwargs() == {
        "do_sample": True,
        "temperature": 0.8,
        "top_p": 0.9,
        "top_k": 3,  # generation_kwargs override the other settings, as in GRPO
        "max_new_tokens": 7,
        "min_p": 0.05,
        "repetition_penalty": 1.2,
        "suppress_tokens": [4],
    }


def test_online_training_evaluates_an_offline_eval_dataset(tiny_paths, tmp_path):
    from trl_won.tiny import toy_ranking_dataset

    args = online_args(tmp_path, per_device_eval_batch_size=4)
    trainer = RRHFTrainer(
        tiny_paths.policy,
        args=args,
        train_dataset=toy_prompt_dataset(),
        eval_dataset=toy_ranking_dataset(),
        reward_funcs=Recorder(),
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and 0 <= metrics["eval_ranking_accuracy"] <= 1


def test_prompt_only_dataset_defaults_to_grpo_num_generations(tiny_paths, tmp_path):
    args = RRHFConfig(**cpu_training_kwargs(tmp_path, per_device_train_batch_size=2))
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=toy_prompt_dataset(), reward_funcs=Recorder())
    assert trainer.num_generations == 8 and trainer.args.generation_batch_size == 16


ASSISTANT_B = [{"role": "assistant", "content": "b"}]
BAD_INPUTS = {
    "no-reward-funcs": ({"prompt": ["Q"]}, {}, ValueError, r"prompt-only .*needs `reward_funcs`"),
    "completions-not-a-list": (
        {"prompt": ["Q", "R"], "completions": [" a", " b"]},
        {"funcs": True, "num_generations": 2},
        DatasetFormatError,
        r"row 0, column 'completions': expected a list",
    ),
    "completions-wrong-format": (
        {"prompt": ["Q", "R"], "completions": [[ASSISTANT_B], [ASSISTANT_B]]},
        {"funcs": True, "num_generations": 2},
        DatasetFormatError,
        r"row 0, column 'completions\[0\]'.*must be a string",
    ),
    "prompt-over-max-length": (
        {"prompt": ["Q", "R" * 80]},
        {"funcs": True, "max_length": 20},
        DatasetFormatError,
        r"row 1, column 'prompt'.*max_length=20",
    ),
    "prompt-over-max-positions": (
        {"prompt": ["Q", "R" * 1100]},
        {"funcs": True, "max_length": None},
        DatasetFormatError,
        r"row 1, column 'prompt'.*max_position_embeddings",
    ),
    "rewards-and-reward-funcs": (
        {"prompt": ["Q"], "completions": [[" a", " b"]], "rewards": [[1.0, 0.0]]},
        {"funcs": True, "num_generations": 2},
        ValueError,
        r"has a 'rewards' column",
    ),
    "fixed-completion-merges-into-the-prompt": (
        {"prompt": ["Q", "Summ"], "completions": [[" a"], ["arize"]]},
        {"funcs": True, "num_generations": 2},
        DatasetFormatError,
        r"row 1, column 'completions': the tokens of the fixed completion 'arize' do not continue the prompt",
    ),
    "empty-prompt": ({"prompt": [""]}, {"funcs": True}, DatasetFormatError, r"row 0, column 'prompt'"),
    "fewer-prompts-than-a-round": (
        {"prompt": ["Q", "R", "S"]},
        {"funcs": True, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2},
        ValueError,
        r"has 3 prompt\(s\), fewer than one generation round takes: 4 \(per_device_train_batch_size=2 .* "
        r"steps_per_generation=2\)",
    ),
}


@pytest.mark.parametrize("rows, kwargs, error, pattern", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_online_input_names_the_row_column_or_argument(tiny_paths, tmp_path, rows, kwargs, error, pattern):
    funcs = Recorder() if kwargs.pop("funcs", False) else None
    args = online_args(tmp_path, **{"num_generations": None, **kwargs})
    with pytest.raises(error, match=pattern):
        RRHFTrainer(tiny_paths.policy, args=args, train_dataset=Dataset.from_dict(rows), reward_funcs=funcs)


def test_use_vllm_without_the_vllm_module_is_a_clear_error(tiny_paths, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trl_won.rrhf.vllm", None)  # as if the module were absent
    args = online_args(tmp_path, use_vllm=True)
    with pytest.raises((NotImplementedError, ImportError), match="use_vllm"):
        RRHFTrainer(tiny_paths.policy, args=args, train_dataset=toy_prompt_dataset(), reward_funcs=Recorder())


# ----- the command line -----

CLI_CALLS = []


def cli_length_reward(prompts, completions, completion_ids, **kwargs):
    """A reward function `trl-won rrhf --reward_funcs tests.test_rrhf_online.cli_length_reward` imports."""
    CLI_CALLS.append(len(completions))
    return [float(len(ids)) for ids in completion_ids]


def test_rrhf_command_samples_online_with_reward_funcs(tiny_paths, tmp_path, capsys):
    from trl_won.cli.main import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in toy_prompt_dataset().to_list()))
    output_dir = tmp_path / "rrhf-online"
    argv = ["rrhf", "--model_name_or_path", tiny_paths.policy, "--dataset_name", str(prompts), "--max_steps", "1"]
    argv += ["--output_dir", str(output_dir), "--report_to", "none", "--per_device_train_batch_size", "2"]
    argv += ["--num_generations", "3", "--max_completion_length", "4", "--temperature", "0.9", "--top_k", "20"]
    argv += ["--reward_funcs", "tests.test_rrhf_online.cli_length_reward", "--reward_model_name_or_path"]
    assert main([*argv, tiny_paths.reward_model]) == 0
    imported = sys.modules["tests.test_rrhf_online"]  # the module the command imported (pytest names this one apart)
    assert imported.CLI_CALLS == [2 * 3]  # one round: 2 prompts x 3 samples
    assert (output_dir / "model.safetensors").exists()

    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:-3], "--reward_funcs", "no_such_reward"])
    assert exit_info.value.code == 2
    assert "--reward_funcs no_such_reward: expected one of accuracy_reward" in capsys.readouterr().err


def test_use_vllm_calls_the_vllm_sampler_contract(tiny_paths, tokenizer, tmp_path, monkeypatch):
    # `trl_won.rrhf.vllm.VLLMSampler(trainer)` is built once after `Trainer.__init__`; `sample(prompts,
    # num_generations, seed)` returns `num_generations` Samples per prompt. A fake stands in for vLLM here.
    import types

    from trl_won.generation import Sample

    built, calls = [], []

    class FakeVLLMSampler:
        def __init__(self, trainer):
            assert trainer.optimizer is None and trainer.args.use_vllm  # after Trainer.__init__, before training
            built.append(trainer)

        def sample(self, prompts, num_generations, seed):
            calls.append((list(prompts), num_generations, seed))
            ids = tokenizer(" the cat", add_special_tokens=False)["input_ids"]
            return [
                [Sample(text=" the cat", token_ids=ids[: i + 1], finished=False) for i in range(num_generations)]
                for _ in prompts
            ]

    monkeypatch.setitem(sys.modules, "trl_won.rrhf.vllm", types.SimpleNamespace(VLLMSampler=FakeVLLMSampler))
    recorder = Recorder()
    args = online_args(tmp_path, use_vllm=True, num_generations=2, max_steps=2, seed=5)
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=toy_prompt_dataset(), reward_funcs=recorder)
    trainer.train()
    assert built == [trainer] and len(calls) == 2
    assert [(len(prompts), k, seed) for prompts, k, seed in calls] == [(2, 2, derived_seed(5, r, 0)) for r in (0, 1)]
    ids = tokenizer(" the cat", add_special_tokens=False)["input_ids"]
    assert recorder.calls[0]["completion_ids"][:2] == [ids[:1], ids[:2]]  # the sampler's candidates are scored

import math

import pytest
import torch

from trl_won.rewards import RewardModelScorer, as_reward_funcs, call_reward_func, weighted_rewards


PROMPTS = ["What is the capital of France?", "Say something.", "Hi", "Describe the fox."]
COMPLETIONS = [" Paris is the capital of France.", " No.", " Hello there, how are you today?", " Quick."]


def test_scorer_batches_by_length_without_changing_scores(reward_model, tokenizer):
    scorer = RewardModelScorer(reward_model, tokenizer, batch_size=3)
    batched = scorer(PROMPTS, COMPLETIONS)
    one_by_one = []
    for p, c in zip(PROMPTS, COMPLETIONS):
        ids = torch.tensor([tokenizer(p + c + tokenizer.eos_token)["input_ids"]])
        one_by_one.append(reward_model(input_ids=ids).logits[0, 0].item())
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert len(set(batched)) == len(batched)


def test_scorer_loads_from_path_and_handles_conversations(tiny_paths):
    scorer = RewardModelScorer(tiny_paths.reward_model)
    scores = scorer([[{"role": "user", "content": "Hi"}]], [[{"role": "assistant", "content": "Hello"}]])
    assert len(scores) == 1 and math.isfinite(scores[0])
    assert scorer.name == "reward_model"


def test_scorer_requires_a_pad_token_id(reward_model, tokenizer):
    reward_model.config.pad_token_id = None
    with pytest.raises(ValueError, match="pad_token_id"):
        RewardModelScorer(reward_model, tokenizer)


def test_scorer_rejects_a_multi_label_model(tiny_paths):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_paths.reward_model, num_labels=2, ignore_mismatched_sizes=True
    )
    with pytest.raises(ValueError, match="num_labels=2"):
        RewardModelScorer(model)


def test_reward_function_gets_only_the_arguments_it_declares():
    def two_args(prompts, completions):
        return [float(len(c)) for c in completions]

    seen = {}

    def grpo_style(prompts, completions, completion_ids=None, **kwargs):
        seen.update(kwargs)
        return [1.0] * len(prompts)

    assert call_reward_func(two_args, ["a", "b"], ["xy", "z"], completion_ids=[[1], [2]]) == [2.0, 1.0]
    call_reward_func(grpo_style, ["a"], ["b"], source=["s"])
    assert seen == {"source": ["s"]}


def test_async_reward_function():
    async def scored(prompts, completions):
        return [0.5 for _ in completions]

    assert call_reward_func(scored, ["a", "b"], ["c", "d"]) == [0.5, 0.5]


def test_reward_function_errors_name_the_function():
    def too_few(prompts, completions):
        return [1.0]

    def nan_score(prompts, completions):
        return [1.0, math.nan]

    with pytest.raises(ValueError, match=r"'too_few' returned 1 scores for 2 completions"):
        call_reward_func(too_few, ["a", "b"], ["c", "d"])
    with pytest.raises(ValueError, match=r"'nan_score' returned nan for completion 1"):
        call_reward_func(nan_score, ["a", "b"], ["c", "d"])
    none_ok = call_reward_func(lambda prompts, completions: [None, 2], ["a", "b"], ["c", "d"], allow_none=True)
    assert math.isnan(none_ok[0]) and none_ok[1] == 2.0


def test_weighted_sum_and_normalization(tiny_paths):
    def length(prompts, completions):
        return [float(len(c)) for c in completions]

    def one(prompts, completions):
        return [1.0] * len(completions)

    assert weighted_rewards([length, one], ["p", "p"], ["ab", "c"], reward_weights=[2.0, -1.0]) == [3.0, 1.0]
    with pytest.raises(ValueError, match="one weight per reward function"):
        weighted_rewards([length], ["p"], ["a"], reward_weights=[1.0, 2.0])
    funcs = as_reward_funcs([length, tiny_paths.reward_model])
    assert funcs[0] is length and isinstance(funcs[1], RewardModelScorer)
    with pytest.raises(TypeError, match="callable"):
        as_reward_funcs([3])

"""The demo's model-facing pieces on the tiny fixtures: judge reading, judge training, West-of-N stand-in."""

import math

import pytest
import torch

from trl_won.demo.stand_ins import JUDGE_ENDING, StandInJudge, render_judge_request, west_of_n_pairs
from trl_won.demo.training import TrainSettings, answer_loss, answer_token_ids, train_judge_lm
from trl_won.generation import SamplingParams, sample_completions


PROMPTS = [[{"role": "user", "content": "Write 4 animals."}], [{"role": "user", "content": "Write 3 colors."}]]


def test_answer_token_ids(tokenizer):
    ids = answer_token_ids(tokenizer, JUDGE_ENDING, ["1", "2"])
    assert tokenizer.convert_ids_to_tokens(ids) == ["1", "2"]
    with pytest.raises(ValueError, match="single token after"):
        answer_token_ids(tokenizer, JUDGE_ENDING, ["1 2 3 4 5"])


def test_answer_loss_hand_computed():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([0.75, 1.0])
    p = 1 / (1 + math.exp(-2.0))
    expected = (-(0.75 * math.log(p) + 0.25 * math.log(1 - p)) + -math.log(0.5)) / 2
    assert answer_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_stand_in_judge_reads_the_answer_position(policy, tokenizer):
    judge = StandInJudge(policy, tokenizer, batch_size=3)
    a, b = ["dog owl fox cat", "red"], ["hen", "blue gold teal"]
    orders = judge.judge_orders(PROMPTS, a, b)
    one, two = answer_token_ids(tokenizer, JUDGE_ENDING, ["1", "2"])

    def by_hand(prompt, first, second):
        ids = torch.tensor([tokenizer(render_judge_request(prompt, first, second))["input_ids"]])
        with torch.no_grad():
            logits = policy(input_ids=ids).logits[0, -1]
        return torch.softmax(logits[[one, two]], dim=-1)[0].item()

    for i in range(2):
        assert orders.p_ab[i] == pytest.approx(by_hand(PROMPTS[i], a[i], b[i]), abs=1e-5)
        assert orders.p_ba[i] == pytest.approx(by_hand(PROMPTS[i], b[i], a[i]), abs=1e-5)
        assert orders.averaged[i] == pytest.approx((orders.p_ab[i] + 1 - orders.p_ba[i]) / 2)
    assert judge(PROMPTS, a, b) == orders.averaged


def test_train_judge_lm_moves_the_answer_towards_the_targets(policy, tokenizer, tmp_path):
    judge = StandInJudge(policy, tokenizer)
    requests = [render_judge_request(PROMPTS[0], "dog", "hen"), render_judge_request(PROMPTS[0], "hen", "dog")]
    before = judge.judge_orders(PROMPTS[:1], ["dog"], ["hen"])
    settings = TrainSettings(output_dir=str(tmp_path), epochs=30, learning_rate=1e-2, batch_size=2)
    train_judge_lm(policy, tokenizer, requests, [0.9, 0.1], settings, judge.answer_ids)
    after = judge.judge_orders(PROMPTS[:1], ["dog"], ["hen"])
    assert abs(after.p_ab[0] - 0.9) < abs(before.p_ab[0] - 0.9) and after.p_ab[0] > 0.75
    assert abs(after.p_ba[0] - 0.1) < abs(before.p_ba[0] - 0.1) and after.p_ba[0] < 0.25
    assert not policy.training


@pytest.mark.parametrize("strategy, n", [("west_of_n", 4), ("best_random", 4), ("naive", 2)])
def test_west_of_n_stand_in_picks_by_the_base_scores(policy, tokenizer, strategy, n):
    params = SamplingParams(temperature=1.0, max_new_tokens=8)

    def longest_is_best(prompts, completions):
        return [float(len(c[0]["content"])) for c in completions]

    rows = west_of_n_pairs(policy, tokenizer, longest_is_best, PROMPTS, n, strategy, params, seed=3)
    samples = sample_completions(policy, tokenizer, PROMPTS, n, params, batch_size=256, seed=3)
    assert rows["prompt"] and set(map(str, rows["prompt"])) <= set(map(str, PROMPTS))
    for prompt, chosen, rejected, confidence in zip(
        rows["prompt"], rows["chosen"], rows["rejected"], rows["confidence"], strict=True
    ):
        texts = [s.text for s in samples[PROMPTS.index(prompt)]]
        chosen, rejected = chosen[0]["content"], rejected[0]["content"]
        assert len(chosen) == max(map(len, texts)) and rejected in texts
        assert len(rejected) < len(chosen)
        if strategy == "west_of_n":
            assert len(rejected) == min(map(len, texts))
        assert confidence == pytest.approx(1 / (1 + math.exp(-(len(chosen) - len(rejected)))), rel=1e-5)
    with pytest.raises(ValueError, match="Unknown strategy"):
        west_of_n_pairs(policy, tokenizer, longest_is_best, PROMPTS, n, "best_worst", params, seed=3)

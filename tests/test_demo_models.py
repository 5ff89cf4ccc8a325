"""The demo's model-facing pieces on the tiny fixtures: the judge's training text, judge training, reward models."""

import math

import pytest
import torch

from trl_won.demo.judge import JUDGE_TEMPLATE, build_judge, judge_training_text
from trl_won.demo.training import TrainSettings, answer_loss, answer_token_ids, train_judge_lm, train_reward_model


PROMPTS = [[{"role": "user", "content": "Write 4 animals."}], [{"role": "user", "content": "Write 3 colors."}]]


def test_answer_token_ids(tokenizer):
    ids = answer_token_ids(tokenizer, JUDGE_TEMPLATE.ending, ["1", "2"])
    assert tokenizer.convert_ids_to_tokens(ids) == ["1", "2"]
    with pytest.raises(ValueError, match="single token after"):
        answer_token_ids(tokenizer, JUDGE_TEMPLATE.ending, ["1 2 3 4 5"])


def test_answer_loss_hand_computed():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([0.75, 1.0])
    p = 1 / (1 + math.exp(-2.0))
    expected = (-(0.75 * math.log(p) + 0.25 * math.log(1 - p)) + -math.log(0.5)) / 2
    assert answer_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_training_text_is_what_the_judge_reads(policy, tokenizer):
    """The judge LM is trained on `judge_training_text`; `TransformersJudge` must show it the same tokens."""
    judge = build_judge(policy, tokenizer, name="demo-judge")
    a, b = [{"role": "assistant", "content": "dog owl fox cat"}], [{"role": "assistant", "content": "hen"}]
    requests = judge.prompts_for(PROMPTS[0], a, b)
    rendered = [judge.lm.render(r, JUDGE_TEMPLATE.prefill()) for r in requests]
    assert rendered == [judge_training_text(PROMPTS[0], a, b), judge_training_text(PROMPTS[0], b, a)]
    assert [list(s) for s in judge.answer_tokens.sequences] == [
        [i] for i in answer_token_ids(tokenizer, JUDGE_TEMPLATE.ending, ["1", "2"])
    ]


def test_judge_reads_the_answer_position(policy, tokenizer):
    judge = build_judge(policy, tokenizer, name="demo-judge")
    a, b = ["dog owl fox cat", "red"], ["hen", "blue gold teal"]
    judgements = judge.judge_pairs(PROMPTS, a, b)
    one, two = answer_token_ids(tokenizer, JUDGE_TEMPLATE.ending, ["1", "2"])

    def p_answer_1(prompt, first, second):
        ids = torch.tensor([tokenizer(judge_training_text(prompt, first, second))["input_ids"]])
        with torch.no_grad():
            logits = policy(input_ids=ids).logits[0, -1]
        return torch.softmax(logits[[one, two]], dim=-1)[0].item()

    for i, judgement in enumerate(judgements):
        assert judgement.probability_a_first == pytest.approx(p_answer_1(PROMPTS[i], a[i], b[i]), abs=1e-5)
        assert judgement.probability_a_second == pytest.approx(1 - p_answer_1(PROMPTS[i], b[i], a[i]), abs=1e-5)


def test_train_judge_lm_moves_the_answer_towards_the_targets(policy, tokenizer, tmp_path):
    requests = [judge_training_text(PROMPTS[0], "dog", "hen"), judge_training_text(PROMPTS[0], "hen", "dog")]
    before = build_judge(policy, tokenizer, name="before").judge_pairs(PROMPTS[:1], ["dog"], ["hen"])[0]
    settings = TrainSettings(output_dir=str(tmp_path), epochs=30, learning_rate=1e-2, batch_size=2)
    answer_ids = answer_token_ids(tokenizer, JUDGE_TEMPLATE.ending, ["1", "2"])
    train_judge_lm(policy, tokenizer, requests, [0.9, 0.1], settings, answer_ids)
    after = build_judge(policy, tokenizer, name="after").judge_pairs(PROMPTS[:1], ["dog"], ["hen"])[0]
    # Targets: P("1") = 0.9 with dog first, P("1") = 0.1 with hen first, i.e. P(dog) = 0.9 in both orders.
    assert abs(after.probability_a_first - 0.9) < abs(before.probability_a_first - 0.9)
    assert after.probability_a_first > 0.75 and after.probability_a_second > 0.75
    assert not policy.training


def test_soft_labels_train_with_the_rlaif_reward_trainer(tiny_paths, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    prompts = [PROMPTS[0]] * 4
    chosen = [[{"role": "assistant", "content": "dog owl"}]] * 4
    rejected = [[{"role": "assistant", "content": "hen"}]] * 4
    settings = TrainSettings(output_dir=str(tmp_path), epochs=3, learning_rate=1e-3, batch_size=2)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_paths.reward_model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained = train_reward_model(model, tokenizer, prompts, chosen, rejected, settings, soft_labels=[0.9] * 4)
    assert any(not torch.equal(before[n], p) for n, p in trained.named_parameters())
    with pytest.raises(ValueError, match="soft_label"):
        train_reward_model(model, tokenizer, prompts, chosen, rejected, settings, soft_labels=[1.5] * 4)

import asyncio
import math

import pytest
from datasets import Dataset
from rlaif_helpers import FixedJudge, LengthJudge, LengthScorer
from trl.trainer.utils import get_callable_name, is_async_callable

from tests.helpers import cpu_training_kwargs
from trl_won.data_utils import DatasetFormatError
from trl_won.rlaif import (
    LabelStore,
    PairwiseJudgement,
    alignment_metrics,
    judge_reward_func,
    label_preferences,
    labeler_alignment,
)
from trl_won.tiny import toy_preference_dataset, toy_ranking_dataset


def test_label_preferences_builds_a_trl_preference_dataset(tmp_path):
    rows = Dataset.from_dict(
        {
            "prompt": ["p1", "p2", "p3", "p4"],
            "completion_a": [" short", " a much longer answer", " same", " x"],
            "completion_b": [" a longer one", " tiny", " same", " y"],
            "id": [10, 11, 12, 13],
        }
    )
    judge = FixedJudge(
        [
            PairwiseJudgement.from_orders(0.2, 0.4),  # b preferred, consistently: P(b) = 0.7
            PairwiseJudgement.from_orders(0.9, 0.3),  # a preferred on average, position-inconsistent
            PairwiseJudgement.unjudged("the judge answered 'maybe', which is neither 1 nor 2"),
            PairwiseJudgement.from_orders(0.5, 0.5),  # a tie: a is chosen with soft label 0.5
        ]
    )
    out = label_preferences(rows, judge, store=LabelStore(tmp_path / "s.sqlite"), show_progress=False)
    assert out.column_names == [
        "prompt",
        "chosen",
        "rejected",
        "soft_label",
        "soft_label_chosen_first",
        "soft_label_chosen_second",
        "position_consistent",
        "id",
    ]
    assert out["prompt"] == ["p1", "p2", "p4"] and out["id"] == [10, 11, 13]
    assert out["chosen"] == [" a longer one", " a much longer answer", " x"]
    assert out["rejected"] == [" short", " tiny", " y"]
    assert out["soft_label"] == pytest.approx([0.7, 0.6, 0.5])
    # For p1 the chosen one is b: P(b | b first) = 1 - P(a | a second) = 0.6; P(b | b second) = 0.8.
    assert out["soft_label_chosen_first"] == pytest.approx([0.6, 0.9, 0.5])
    assert out["soft_label_chosen_second"] == pytest.approx([0.8, 0.3, 0.5])
    assert out["position_consistent"] == [True, False, None]


def test_label_preferences_filters(caplog):
    rows = [{"prompt": f"p{i}", "completion_a": "a", "completion_b": f"b{i}"} for i in range(3)]
    judgements = [
        PairwiseJudgement.from_orders(0.9, 0.95),
        PairwiseJudgement.from_orders(0.9, 0.3),
        PairwiseJudgement.from_orders(0.6, 0.55),
    ]
    kept = label_preferences(rows, FixedJudge(judgements), drop_inconsistent=True, show_progress=False)
    assert kept["prompt"] == ["p0", "p2"]
    kept = label_preferences(rows, FixedJudge(judgements), min_confidence=0.7, show_progress=False)
    assert kept["prompt"] == ["p0"]
    assert "kept 1 of 3 pairs; dropped 2 confidence below 0.7" in caplog.text
    with pytest.raises(ValueError, match=r"min_confidence` must be in \[0.5, 1\]"):
        label_preferences(rows, FixedJudge(judgements), min_confidence=0.2)


def test_label_preferences_from_lists_of_completions_in_conversational_format():
    ranking = toy_ranking_dataset(conversational=True)  # rows with 2 to 4 completions and a `rewards` column
    judge = LengthJudge()
    out = label_preferences(ranking, judge, show_progress=False)
    expected_pairs = sum(len(c) * (len(c) - 1) // 2 for c in ranking["completions"])
    assert len(out) == expected_pairs == len(judge.pairs_seen)
    assert "rewards" not in out.column_names
    first = out[0]
    assert isinstance(first["prompt"], list) and first["chosen"][0]["role"] == "assistant"
    # The length judge prefers the longer completion.
    assert all(len(c[0]["content"]) >= len(r[0]["content"]) for c, r in zip(out["chosen"], out["rejected"]))
    one_each = label_preferences(ranking, LengthJudge(), pairing="random", seed=3, show_progress=False)
    assert len(one_each) == len(ranking)


def test_label_preferences_errors_name_the_problem():
    with pytest.raises(DatasetFormatError, match="'completion_a' and 'completion_b', or 'prompt' with 'completions'"):
        label_preferences([{"prompt": "p", "answer": "a"}], LengthJudge())
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'completions': expected a list of at least 2"):
        label_preferences(
            [{"prompt": "p", "completions": ["a", "b"]}, {"prompt": "q", "completions": ["a"]}], LengthJudge()
        )
    with pytest.raises(DatasetFormatError, match=r"row 0, column 'completion_a': the prompt is a string"):
        label_preferences([{"prompt": "p", "completion_a": 3, "completion_b": "b"}], LengthJudge())


def test_alignment_metrics_by_hand():
    judgements = [
        PairwiseJudgement.from_orders(0.9, 0.7),  # right, consistent
        PairwiseJudgement.from_orders(0.8, 0.4),  # right on average (0.6), same position after swap
        PairwiseJudgement.from_orders(0.2, 0.3),  # wrong, consistent
        PairwiseJudgement.from_orders(0.5, 0.5),  # tie: half a point; consistency undefined
        PairwiseJudgement.unjudged("no answer"),
    ]
    report = alignment_metrics(judgements)
    assert report.num_pairs == 5 and report.num_judged == 4
    assert report.accuracy == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert report.position_consistency == pytest.approx(2 / 3)
    assert report.same_position_rate == pytest.approx(1 / 3)
    assert report.mean_confidence == pytest.approx((0.8 + 0.6 + 0.75 + 0.5) / 4)
    flipped = alignment_metrics(judgements[:3], gold=["b", "b", "b"])
    assert flipped.accuracy == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="'a' or 'b'"):
        alignment_metrics(judgements[:1], gold=["c"])


def test_labeler_alignment_against_gold_preferences(tmp_path):
    gold = toy_preference_dataset()  # chosen = the toy's best completion, which is mostly the longer one
    report = labeler_alignment(gold, LengthJudge(), store=LabelStore(tmp_path / "s.sqlite"), show_progress=False)
    longer = sum(len(c) > len(r) for c, r in zip(gold["chosen"], gold["rejected"]))
    assert report.num_pairs == len(gold) == report.num_judged
    assert report.accuracy == pytest.approx(longer / len(gold))
    assert report.position_consistency == 1.0
    with pytest.raises(DatasetFormatError, match="no column 'chosen'"):
        labeler_alignment([{"prompt": "p", "completion_a": "a"}], LengthJudge())
    # An implicit prompt (the shared start of chosen and rejected, as in TRL's datasets) is extracted.
    implicit = [
        {
            "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}],
            "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "No."}],
        }
    ]
    judge = LengthJudge()
    assert labeler_alignment(implicit, judge, show_progress=False).accuracy == 1.0
    assert judge.pairs_seen == [
        (
            [{"role": "user", "content": "Hi"}],
            [{"role": "assistant", "content": "Hello there!"}],
            [{"role": "assistant", "content": "No."}],
        )
    ]


def test_a_scoring_judge_as_a_trl_reward_function(tmp_path):
    scorer = LengthScorer()
    reward = judge_reward_func(scorer, store=LabelStore(tmp_path / "s.sqlite"), name="length_judge")
    assert get_callable_name(reward) == "length_judge" and not is_async_callable(reward)
    values = reward(prompts=["p", "p"], completions=["a long completion", ""], completion_ids=[[1], [2]], extra=[1, 2])
    assert values[0] == pytest.approx(math.tanh(1.7 - 1)) and values[1] is None  # None is what TRL turns into NaN
    reward(prompts=["p", "p"], completions=["a long completion", ""])
    assert scorer.calls == 1  # the second call came from the store

    async_reward = judge_reward_func(LengthScorer(), asynchronous=True)
    assert is_async_callable(async_reward) and get_callable_name(async_reward) == "rlaif_judge"
    values = asyncio.run(async_reward(prompts=["p"], completions=[[{"role": "assistant", "content": "hello"}]]))
    assert values == pytest.approx([math.tanh(0.5 - 1)])
    with pytest.raises(TypeError, match="pairwise judge compares two completions"):
        judge_reward_func(LengthJudge())


@pytest.mark.parametrize("trainer_name, asynchronous", [("GRPO", False), ("GRPO", True), ("RLOO", True)])
def test_judge_reward_func_inside_grpo_and_rloo_training(tiny_paths, tmp_path, trainer_name, asynchronous):
    import trl

    from trl_won.tiny import toy_prompt_dataset

    scorer = LengthScorer()
    config_class, trainer_class = getattr(trl, f"{trainer_name}Config"), getattr(trl, f"{trainer_name}Trainer")
    args = config_class(
        **cpu_training_kwargs(
            tmp_path, max_steps=1, per_device_train_batch_size=4, num_generations=2, max_completion_length=6
        )
    )
    reward = judge_reward_func(scorer, asynchronous=asynchronous, name="ai_judge")
    dataset = toy_prompt_dataset()
    trainer = trainer_class(model=tiny_paths.policy, reward_funcs=[reward], args=args, train_dataset=dataset)
    trainer.train()
    assert scorer.calls >= 1
    logged = trainer.state.log_history[0]
    assert "rewards/ai_judge/mean" in logged and math.isfinite(logged["rewards/ai_judge/mean"])


class TenthsJudge(LengthJudge):
    """Position-inconsistent answers with a per-order probability of 0.1, for which 1 - (1 - p) != p."""

    def _judge_pairs(self, prompts, completions_a, completions_b):
        longer = [j.probability > 0.5 for j in super()._judge_pairs(prompts, completions_a, completions_b)]
        return [PairwiseJudgement.from_orders(*((0.95, 0.1) if x else (0.1, 0.95))) for x in longer]


def test_a_resumed_label_preferences_equals_an_uninterrupted_one_bit_for_bit(tmp_path):
    ranking = toy_ranking_dataset()
    store = LabelStore(tmp_path / "labels.sqlite")
    with pytest.raises(KeyboardInterrupt):
        label_preferences(ranking, TenthsJudge(fail_after=10), store=store, chunk_size=3, show_progress=False)
    assert store.count() == 9  # among them pairs stored against their key's order
    resumed = label_preferences(ranking, TenthsJudge(), store=store, chunk_size=3, show_progress=False)
    uninterrupted = label_preferences(ranking, TenthsJudge(), chunk_size=3, show_progress=False)
    assert resumed.to_dict() == uninterrupted.to_dict()

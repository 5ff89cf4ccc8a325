"""Confidence and likelihood filters, offline and running (pure functions), checked against hand-computed values."""

import math

import pytest

from trl_won.west_of_n.config import WestOfNConfig
from trl_won.west_of_n.preference import (
    RunningQuantile,
    confidence_mask,
    likelihood_mask,
    quantile,
    quantile_confidence_mask,
)
from trl_won.west_of_n.results import PromptResult
from trl_won.west_of_n.storage import filter_results, results_to_dataset


def test_quantile_interpolates_linearly():
    values = [0.9, 0.6, 0.7, 0.8]
    assert quantile(values, 0.5) == pytest.approx(0.75)  # position 1.5 between 0.7 and 0.8
    assert quantile(values, 0.25) == pytest.approx(0.675)  # position 0.75 between 0.6 and 0.7
    assert quantile(values, 0.0) == 0.6 and quantile(values, 1.0) == 0.9
    with pytest.raises(ValueError, match="empty"):
        quantile([], 0.5)


def test_confidence_quantile_keeps_exactly_the_upper_part():
    mask, threshold = quantile_confidence_mask([0.9, 0.6, 0.7, 0.8], 0.5)
    assert threshold == pytest.approx(0.75)
    assert mask == [True, False, False, True]
    assert quantile_confidence_mask([0.9, 0.6], 0.0)[0] == [True, True]
    assert quantile_confidence_mask([], 0.5) == ([], None)


def test_confidence_threshold_is_inclusive():
    assert confidence_mask([0.51, 0.7, 0.69999, 0.9], 0.7) == [False, True, False, True]


def test_likelihood_bounds_apply_to_both_responses():
    chosen = [-1.0, -3.0, -0.5, -2.0]
    rejected = [-2.0, -1.0, -6.0, -0.1]
    assert likelihood_mask(chosen, rejected, -2.5, -0.2) == [True, False, False, False]
    assert likelihood_mask(chosen, rejected, min_logp=-2.5) == [True, False, False, True]
    assert likelihood_mask(chosen, rejected, max_logp=-0.2) == [True, True, True, False]
    assert likelihood_mask(chosen, rejected) == [True] * 4
    assert likelihood_mask([math.nan], [-1.0], -2.0) == [False]


def test_running_quantile_over_a_window():
    running = RunningQuantile(0.5, window=3)
    assert running.update([]) is None
    assert running.update([0.6, 0.8]) == pytest.approx(0.7)
    assert running.update([0.9]) == pytest.approx(0.8)  # window 0.6, 0.8, 0.9
    assert running.update([0.55, 0.65]) == pytest.approx(0.65)  # window 0.9, 0.55, 0.65
    with pytest.raises(ValueError, match="window"):
        RunningQuantile(0.5, 0)


def _result(index, confidence, chosen_logp, rejected_logp, reason=None):
    pair = reason is None
    return PromptResult(
        index=index,
        prompt=f"p{index}",
        completions=["good", "bad"],
        finished=[True, True],
        scores=[1.0, 0.0],
        chosen=0 if pair else None,
        rejected=1 if pair else None,
        chosen_score=1.0 if pair else None,
        rejected_score=0.0 if pair else None,
        confidence=confidence,
        chosen_logp=chosen_logp,
        rejected_logp=rejected_logp,
        reason=reason,
    )


RESULTS = [
    _result(0, 0.9, -1.0, -1.5),
    _result(1, 0.6, -1.0, -1.0),
    _result(2, None, None, None, reason="tie"),
    _result(3, 0.8, -4.0, -1.0),
    _result(4, 0.7, -1.0, -0.1),
]


def test_filters_remove_exactly_what_they_should():
    # quantile over the 4 pairs (0.6, 0.7, 0.8, 0.9): 0.75, so pairs 1 and 4 go; bounds [-3, -0.5] remove 3 and 4
    kept, summary = filter_results(RESULTS, WestOfNConfig(confidence_quantile=0.5, min_logp=-3.0, max_logp=-0.5))
    assert [r.index for r in kept] == [0]
    assert summary["pairs_formed"] == 4 and summary["no_pair"] == {"tie": 1}
    assert summary["removed_by_confidence"] == 2 and summary["removed_by_likelihood"] == 2
    assert summary["confidence_threshold"] == pytest.approx(0.75)

    kept, _ = filter_results(RESULTS, WestOfNConfig(confidence_quantile=0.5))
    assert [r.index for r in kept] == [0, 3]
    kept, _ = filter_results(RESULTS, WestOfNConfig(min_logp=-3.0, max_logp=-0.5))
    assert [r.index for r in kept] == [0, 1]
    kept, summary = filter_results(RESULTS, WestOfNConfig(confidence_threshold=0.7))
    assert [r.index for r in kept] == [0, 3, 4] and summary["confidence_threshold"] == 0.7
    kept, summary = filter_results(RESULTS, WestOfNConfig())
    assert [r.index for r in kept] == [0, 1, 3, 4] and summary["pairs_kept"] == 4


def test_dataset_columns_and_candidates():
    dataset = results_to_dataset(RESULTS[:2], keep_candidates=True)
    assert dataset.column_names == [
        "prompt",
        "chosen",
        "rejected",
        "chosen_score",
        "rejected_score",
        "confidence",
        "chosen_logp",
        "rejected_logp",
        "completions",
        "rewards",
    ]
    assert dataset[0]["chosen"] == "good" and dataset[0]["rejected"] == "bad"
    assert dataset[1]["completions"] == ["good", "bad"] and dataset[1]["rewards"] == [1.0, 0.0]

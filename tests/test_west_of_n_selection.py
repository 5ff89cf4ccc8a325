"""Pair selection from pointwise scores and knockout tournaments over a pairwise judge (pure functions)."""

import math
import random

import pytest

from trl_won.west_of_n.preference import (
    Knockout,
    random_other,
    run_knockouts,
    select_from_scores,
    select_with_judge,
    selection_from_judgement,
    sigmoid,
)
from trl_won.west_of_n.results import ABSTAINED, INCONSISTENT, TIE


def test_west_of_n_picks_first_best_and_first_worst_with_sigmoid_confidence():
    selection = select_from_scores([0.3, 1.2, -0.5, 1.2, -0.5], "west_of_n")
    assert (selection.chosen, selection.rejected) == (1, 2)
    assert selection.confidence == pytest.approx(1 / (1 + math.exp(-1.7)))
    assert selection.is_pair


def test_equal_scores_give_no_pair():
    selection = select_from_scores([0.5, 0.5, 0.5], "west_of_n")
    assert not selection.is_pair and selection.reason == TIE and selection.confidence == 0.5
    naive = select_from_scores([2.0, 2.0], "naive")
    assert naive.reason == TIE


def test_naive_labels_two_samples_and_rejects_more():
    selection = select_from_scores([0.2, 0.9], "naive")
    assert (selection.chosen, selection.rejected) == (1, 0)
    assert selection.confidence == pytest.approx(1 / (1 + math.exp(-0.7)))
    with pytest.raises(ValueError, match="exactly 2"):
        select_from_scores([0.2, 0.9, 0.1], "naive")


def test_random_other_skips_the_excluded_index():
    class Fixed(random.Random):
        def __init__(self, value):
            super().__init__(0)
            self.value = value

        def randrange(self, n):
            return self.value

    assert [random_other(4, 1, Fixed(v)) for v in range(3)] == [0, 2, 3]
    assert [random_other(4, 3, Fixed(v)) for v in range(3)] == [0, 1, 2]


def test_best_random_keeps_the_best_and_draws_every_other_response():
    scores = [0.1, 2.0, -1.0, 0.5]
    rejected = set()
    for seed in range(40):
        selection = select_from_scores(scores, "best_random", random.Random(seed))
        assert selection.chosen == 1
        assert selection.confidence == pytest.approx(sigmoid(2.0 - scores[selection.rejected]))
        rejected.add(selection.rejected)
    assert rejected == {0, 2, 3}
    with pytest.raises(ValueError, match="random generator"):
        select_from_scores(scores, "best_random")


def test_best_random_tie_with_the_best_gives_no_pair():
    reasons = {select_from_scores([1.0, 1.0, 0.0], "best_random", random.Random(s)).reason for s in range(20)}
    assert reasons == {TIE, None}


def test_unknown_strategy():
    with pytest.raises(ValueError, match="Unknown strategy 'best_worst'"):
        select_from_scores([1.0, 0.0], "best_worst")


def test_sigmoid_is_stable_for_large_margins():
    assert sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0
    assert sigmoid(0.0) == 0.5


def test_judgement_rules():
    assert selection_from_judgement(2, 5, 0.8).is_pair
    assert selection_from_judgement(2, 5, None).reason == ABSTAINED
    assert selection_from_judgement(2, 5, 0.5).reason == TIE
    assert selection_from_judgement(2, 5, 0.3).reason == INCONSISTENT
    assert selection_from_judgement(2, 2, 0.9).reason == INCONSISTENT


# --------------------------------------------------------------------------------------------------------------
# Tournaments. The judge below prefers the longer text: the order is known, so best = longest, worst = shortest.
# --------------------------------------------------------------------------------------------------------------


class LengthJudge:
    """P(a > b) = 1 if a is longer, 0 if shorter, 0.5 if equal; records every call."""

    def __init__(self, candidates):
        self.candidates = candidates
        self.calls = []

    def __call__(self, requests):
        self.calls.append(list(requests))
        out = []
        for prompt, a, b in requests:
            la, lb = len(self.candidates[prompt][a]), len(self.candidates[prompt][b])
            out.append(1.0 if la > lb else 0.0 if la < lb else 0.5)
        return out


def _texts(lengths):
    return ["x" * n for n in lengths]


@pytest.mark.parametrize("n", range(2, 12))
def test_tournament_finds_longest_and_shortest(n):
    lengths = list(range(1, n + 1))
    random.Random(n).shuffle(lengths)
    judge = LengthJudge([_texts(lengths)])
    selections, tournaments = select_with_judge([n], judge, "west_of_n")
    chosen, rejected = selections[0].chosen, selections[0].rejected
    assert lengths[chosen] == n and lengths[rejected] == 1
    assert selections[0].confidence == 1.0
    assert len(tournaments[0].results) <= n // 2 + 2 * (-(-n // 2) - 1) + 1


def test_tournament_cost_and_batching_for_n_8_over_two_prompts():
    # Best (8) and worst (1) are in different first-round matches, so the confidence needs one more comparison.
    first = [3, 8, 1, 5, 2, 7, 4, 6]
    second = [6, 4, 7, 2, 5, 1, 8, 3]
    judge = LengthJudge([_texts(first), _texts(second)])
    selections, tournaments = select_with_judge([8, 8], judge, "west_of_n")
    assert [first[selections[0].chosen], first[selections[0].rejected]] == [8, 1]
    assert [second[selections[1].chosen], second[selections[1].rejected]] == [8, 1]
    # floor(8/2) + 2 * (ceil(8/2) - 1) + 1 = 4 + 6 + 1 = 11 comparisons per prompt
    assert [len(t.results) for t in tournaments] == [11, 11]
    # one judge call per round, both prompts together: the shared first round (4 matches per prompt), two rounds of
    # both brackets (2 + 2, then 1 + 1 matches per prompt) and the confidence round
    assert [len(call) for call in judge.calls] == [8, 8, 4, 2]
    assert {prompt for prompt, _, _ in judge.calls[0]} == {0, 1}


def test_tournament_cost_for_n_64_is_95_comparisons_in_7_calls():
    lengths = list(range(1, 65))
    random.Random(3).shuffle(lengths)
    pairs_first_round = {frozenset((lengths[i], lengths[i + 1])) for i in range(0, 64, 2)}
    assert frozenset((1, 64)) not in pairs_first_round
    judge = LengthJudge([_texts(lengths)])
    selections, tournaments = select_with_judge([64], judge, "west_of_n")
    assert lengths[selections[0].chosen] == 64 and lengths[selections[0].rejected] == 1
    assert len(tournaments[0].results) == 95
    assert len(judge.calls) == 7


def test_first_round_shared_confidence_is_reused():
    judge = LengthJudge([_texts([1, 2])])
    selections, tournaments = select_with_judge([2], judge, "naive")
    assert (selections[0].chosen, selections[0].rejected) == (1, 0)
    assert len(judge.calls) == 1 and len(tournaments[0].results) == 1


def test_abstention_and_ties_let_the_earlier_sample_advance():
    tournament = Knockout(4)
    assert tournament.pending() == [(0, 1), (2, 3)]
    tournament.record([None, 0.5])  # undecided: 0 and 2 advance as winners, 1 and 3 go to the worst bracket
    assert tournament.pending() == [(0, 2), (1, 3)]
    tournament.record([0.2, None])  # best: 2 beats 0; worst: undecided keeps 1
    assert tournament.done and tournament.best == 2 and tournament.worst == 1
    assert tournament.abstentions == 2
    assert tournament.probability(2, 0) == (True, pytest.approx(0.8))
    assert tournament.probability(1, 2) == (False, None)


def test_final_abstention_gives_no_pair():
    def abstain(requests):
        return [None] * len(requests)

    selections, tournaments = select_with_judge([2, 3], abstain, "west_of_n")
    assert [s.reason for s in selections] == [ABSTAINED, ABSTAINED]
    # with 3 responses: 0 stays in the best bracket over 1 then over 2; 1 stays in the worst bracket over 2
    assert (tournaments[1].best, tournaments[1].worst) == (0, 1)


def test_non_transitive_judge_is_reported_inconsistent():
    beats = {(0, 1), (1, 2), (2, 0)}  # rock, paper, scissors

    def cyclic(requests):
        return [1.0 if (a, b) in beats else 0.0 for _, a, b in requests]

    selections, tournaments = select_with_judge([3], cyclic, "west_of_n")
    # round 1: 0 beats 1; best bracket: 2 beats 0; worst bracket: 1 beats 2, so 2 is also the worst
    assert tournaments[0].best == 2 and tournaments[0].worst == 2
    assert selections[0].reason == INCONSISTENT


def test_best_random_with_a_judge_plays_only_the_best_bracket():
    lengths = [2, 5, 1, 4, 3]
    judge = LengthJudge([_texts(lengths)])
    selections, tournaments = select_with_judge([5], judge, "best_random", [random.Random(0)])
    assert lengths[selections[0].chosen] == 5
    assert selections[0].rejected != selections[0].chosen
    assert tournaments[0].worst is None
    assert len(tournaments[0].results) <= 5  # (N - 1) + 1


def test_wrong_number_of_judgements_is_an_error():
    with pytest.raises(ValueError, match="returned 1 results for 2 pairs"):
        run_knockouts([4], lambda requests: [1.0])

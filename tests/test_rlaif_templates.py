import math

import pytest

from trl_won.rlaif import (
    HARMLESSNESS,
    SUMMARIZATION,
    PairwiseExemplar,
    PairwiseJudgement,
    PairwiseTemplate,
    ScoreTemplate,
    answer_distribution,
    resolve_answer_tokens,
)
from trl_won.rlaif.answer_tokens import AnswerTokens, encode
from trl_won.rlaif.base import fingerprint_of
from trl_won.rlaif.templates import format_completion, format_context, get_template


# ------------------------------------------------------------------------------------------------- judgements


def test_judgement_averages_the_two_orders_and_reports_consistency():
    j = PairwiseJudgement.from_orders(probability_a_first=0.9, probability_a_second=0.6)
    assert j.probability == pytest.approx(0.75)
    assert j.position_consistent is True and j.preferred == "a" and j.confidence == pytest.approx(0.75)
    # The judge picks position 1 in both orders: a when a is first (0.8), b when b is first (P(a)=0.3).
    biased = PairwiseJudgement.from_orders(0.8, 0.3)
    assert biased.probability == pytest.approx(0.55)
    assert biased.position_consistent is False
    assert PairwiseJudgement.from_orders(0.5, 0.9).position_consistent is None  # a tie in one order


def test_swapped_judgement_is_the_same_judgement_seen_from_b():
    j = PairwiseJudgement.from_orders(0.9, 0.6, rationale_a_first="r1", rationale_a_second="r2")
    s = j.swapped()
    # b first in the swapped pair is the original "a second" order: P(b | b first) = 1 - P(a | a second).
    assert s.probability == pytest.approx(0.25)
    assert s.probability_a_first == pytest.approx(0.4) and s.probability_a_second == pytest.approx(0.1)
    assert (s.rationale_a_first, s.rationale_a_second) == ("r2", "r1")
    assert s.preferred == "b" and s.swapped() == j
    none = PairwiseJudgement.unjudged("too long", final=False)
    assert none.swapped().probability is None and none.preferred is None and none.confidence is None


# -------------------------------------------------------------------------------------------------- templates


def test_pairwise_template_renders_sample_exemplars_and_ending():
    template = PairwiseTemplate(
        preamble="Pick the better answer. Output 1 or 2.",
        exemplars=[PairwiseExemplar("2+2?", "4", "5", answer=1, rationale="4 is right.")],
    )
    assert template.request("Hi", "Hello", "Go away") + "\n\n" + template.prefill() == (
        "Pick the better answer. Output 1 or 2.\n\n"
        "Context:\n2+2?\n\nResponse 1:\n4\n\nResponse 2:\n5\n\nPreferred Response=1\n\n"
        "Context:\nHi\n\nResponse 1:\nHello\n\nResponse 2:\nGo away\n\nPreferred Response="
    )
    cot = template.request("Hi", "Hello", "Go away", chain_of_thought=True)
    assert cot.endswith("Response 2:\nGo away\n\n" + template.cot_instruction)
    assert "Rationale: 4 is right.\nPreferred Response=1" in cot  # the exemplar shows its rationale with CoT
    assert template.prefill(True) == "Rationale:"
    assert template.prefill(True, " Because. ") == "Rationale: Because.\nPreferred Response="


def test_presets_and_custom_templates():
    assert SUMMARIZATION.sample("T", "s1", "s2") == "Text:\nT\n\nSummary 1:\ns1\n\nSummary 2:\ns2"
    assert SUMMARIZATION.ending == "Preferred Summary="
    assert HARMLESSNESS.asks_for_worse and "more harmful" in HARMLESSNESS.preamble
    assert get_template("harmlessness") is HARMLESSNESS
    with pytest.raises(ValueError, match="Unknown template 'nice'"):
        get_template("nice")
    with pytest.raises(ValueError, match="preamble"):
        PairwiseTemplate(preamble="  ")
    with pytest.raises(ValueError, match="answer` must be 1 or 2"):
        PairwiseExemplar("c", "a", "b", answer=3)


def test_conversations_are_rendered_as_transcripts():
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert format_context(prompt) == "System: Be brief.\nUser: Hi"
    assert format_completion([{"role": "assistant", "content": " Hello "}]) == "Hello"
    assert format_completion(" Paris. ") == "Paris."
    with pytest.raises(TypeError, match="string or a list of chat messages"):
        format_context(3)


def test_score_template_normalizes_to_minus_one_one():
    template = ScoreTemplate()
    assert template.scores == tuple(range(1, 11))
    assert template.normalize(1) == -1.0 and template.normalize(10) == 1.0 and template.normalize(5.5) == 0.0
    assert template.request("Q", "A").endswith("Context:\nQ\n\nResponse:\nA")
    with pytest.raises(ValueError, match="two distinct"):
        ScoreTemplate(scores=(3, 3))


def test_fingerprint_is_stable_and_sensitive():
    assert fingerprint_of({"a": 1, "b": [1, 2]}) == fingerprint_of({"b": [1, 2], "a": 1})
    assert fingerprint_of({"a": 1}) != fingerprint_of({"a": 2})


# ---------------------------------------------------------------------------------------------- answer tokens


def test_answer_tokens_are_single_new_tokens(tokenizer):
    prompt = "Which is better?\n\nPreferred Response="
    tokens = resolve_answer_tokens(tokenizer, prompt, ["1", "2"])
    base = encode(tokenizer, prompt)
    assert tokens.strip == 0
    assert [list(s) for s in tokens.sequences] == [
        encode(tokenizer, prompt + "1")[len(base) :],
        encode(tokenizer, prompt + "2")[len(base) :],
    ]
    assert all(len(s) == 1 for s in tokens.sequences)
    assert tokens.nodes == [()]


def test_trailing_whitespace_moves_into_the_answer(tokenizer):
    # "SCORE: 7" is ["SCO", "RE", ":", " 7"]: the space belongs to the answer token, not to the prompt.
    tokens = resolve_answer_tokens(tokenizer, "Rate it. SCORE: ", [str(s) for s in range(1, 11)])
    assert tokens.strip == 1
    assert tokens.apply("x SCORE: ") == "x SCORE:"
    assert tokenizer.convert_ids_to_tokens([s[0] for s in tokens.sequences])[6] == "Ġ7"
    assert all(len(s) == 1 for s in tokens.sequences)


def test_multi_token_answers_are_resolved_along_their_path(tokenizer):
    # Without the space the tiny tokenizer splits "10" into "1", "0".
    tokens = resolve_answer_tokens(tokenizer, "Rate it. SCORE:", [str(s) for s in range(1, 11)])
    one = tokenizer.convert_tokens_to_ids("1")
    zero = tokenizer.convert_tokens_to_ids("0")
    assert tokens.sequences[9] == (one, zero)
    assert tokens.nodes == [(), (one,)]
    assert tokens.needed_tokens((one,)) == [zero]


def test_answer_distribution_by_hand():
    # Two single-token answers: softmax over their log-probabilities only.
    tokens = AnswerTokens(("1", "2"), ((5,), (6,)))
    p = answer_distribution(tokens, {(): {5: math.log(0.3), 6: math.log(0.1)}})
    assert p == pytest.approx([0.75, 0.25])
    # "1" = (5,), "2" = (6,), "10" = (5, 7): P(10) = P(5) P(7|5), P(1) = P(5) (1 - P(7|5)).
    tokens = AnswerTokens(("1", "2", "10"), ((5,), (6,), (5, 7)))
    p = answer_distribution(tokens, {(): {5: math.log(0.4), 6: math.log(0.2)}, (5,): {7: math.log(0.25)}})
    masses = [0.4 * 0.75, 0.2, 0.4 * 0.25]
    assert p == pytest.approx([m / sum(masses) for m in masses])
    assert answer_distribution(AnswerTokens(("1", "2"), ((5,), (6,))), {(): {5: -math.inf, 6: -math.inf}}) is None


def test_unresolvable_answers_raise_a_clear_error(tokenizer):
    # An answer that merges with the prompt's last characters ("qu" + "ick" -> "quick") changes the prompt's tokens.
    with pytest.raises(ValueError, match=r"answer tokens: 'ick' after 'The qu' tokenizes to .*'Ġquick'"):
        resolve_answer_tokens(tokenizer, "The qu", ["ick", "x"])
    with pytest.raises(ValueError, match="share token ids"):
        resolve_answer_tokens(tokenizer, "Preferred Response=", ["1", "1"])

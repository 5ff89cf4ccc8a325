"""The demo world: oracle on hand-made examples, label noise rates, judge prompt format, determinism, measurements."""

import math
import random

import pytest

from trl_won.demo.data import build_world_data
from trl_won.demo.evaluation import judge_accuracy, mean_and_stderr, paired_difference, pairwise_accuracy
from trl_won.demo.judge import JUDGE_TEMPLATE, judge_training_text
from trl_won.demo.labels import (
    JudgeBias,
    LabelNoise,
    ResponsePair,
    bradley_terry,
    gold_labels,
    human_labels,
    response_pairs,
    sigmoid,
)
from trl_won.demo.sizes import DemoSizes
from trl_won.demo.world import (
    CATEGORIES,
    TASTE,
    WORDS,
    OracleWeights,
    Task,
    demonstration,
    oracle_reward,
    oracle_reward_func,
    parse_task,
    reward_terms,
    sample_tasks,
)


# ---------------------------------------------------------------------------------------------------------------
# Oracle
# ---------------------------------------------------------------------------------------------------------------

TASK = Task(length=4, categories=("animals",))
PROMPT = "Write 4 animals."


def test_task_renders_and_parses_back():
    assert TASK.prompt == PROMPT
    assert parse_task(PROMPT) == TASK
    assert parse_task([{"role": "system", "content": "Be nice."}, {"role": "user", "content": PROMPT}]) == TASK
    two = Task(length=3, categories=("tools", "fruits"))
    assert two.prompt == "Write 3 tools or fruits."
    assert parse_task(two.prompt) == two
    assert two.words == CATEGORIES["tools"] + CATEGORIES["fruits"]


def test_tastes():
    # Every category has the same spread of tastes, listed from most to least liked.
    for words in CATEGORIES.values():
        assert [TASTE[w] for w in words] == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0, -0.5, -1.0]
    assert len(TASTE) == len(WORDS) == 48


@pytest.mark.parametrize(
    "prompt, response, expected",
    [
        (PROMPT, "dog owl fox cat", 2.0 + 2.0 + 1.5 + 1.5),  # the four most liked animals
        (PROMPT, "hen pig cow bee", 0.0 + 0.5 + 1.0 + 1.0),  # the four least liked
        (PROMPT, "dog owl fox", 5.5 - 0.5),  # one word short
        (PROMPT, "dog owl fox cat bee", 7.0 - 0.5),  # a fifth word earns nothing and costs the length penalty
        (PROMPT, "dog dog dog dog", 8.0),  # repeats are allowed
        (PROMPT, "dog red fox cat", 2.0 - 0.5 + 1.5 + 1.5),  # an off-topic colour
        (PROMPT, "dog zebra fox cat", 2.0 - 0.5 + 1.5 + 1.5),  # an unknown word is off topic
        (PROMPT, "", -4 * 0.5),  # nothing: length off by four
        (PROMPT, "red blue gold teal", -4 * 0.5),  # all off topic
        (PROMPT, " Dog, OWL. fox cat!", 7.0),  # case, commas and punctuation are ignored
        ("Write 3 animals or fruits.", "dog fig hen", 2.0 + 2.0 + 0.0),  # either category counts
    ],
)
def test_oracle_reward_hand_computed(prompt, response, expected):
    assert oracle_reward(prompt, response) == pytest.approx(expected)


def test_oracle_terms_and_weights():
    terms = reward_terms(TASK, ["dog", "hen", "gold", "cat", "pig", "owl"])
    assert (terms.on_topic, terms.taste, terms.off_topic, terms.length_error) == (3, 0.5, 1, 2)
    weights = OracleWeights(topic=2.0, taste=0.5, off_topic=1.0, length=0.25)
    assert terms.total(weights) == pytest.approx(6.0 + 0.25 - 1.0 - 0.5)
    assert oracle_reward(PROMPT, "dog hen gold cat pig owl", weights) == pytest.approx(4.75)


def test_oracle_accepts_conversational_prompts_and_completions():
    prompt = [{"role": "user", "content": PROMPT}]
    completion = [{"role": "assistant", "content": "dog owl fox cat"}]
    assert oracle_reward(prompt, completion) == 7.0
    assert oracle_reward_func(prompts=[prompt, PROMPT], completions=[completion, "hen"]) == [7.0, 0.0 - 1.5]


def test_oracle_rejects_prompts_not_from_the_world():
    with pytest.raises(ValueError, match="not an instruction of the demo world"):
        oracle_reward("Write a poem about the sea.", "waves")
    with pytest.raises(ValueError, match="no user message"):
        parse_task([{"role": "system", "content": PROMPT}])


def test_task_validation():
    with pytest.raises(ValueError, match="Unknown category 'planets'"):
        Task(length=3, categories=("planets",))
    with pytest.raises(ValueError, match="one or two different categories"):
        Task(length=3, categories=("animals", "animals"))
    with pytest.raises(ValueError, match="at least one word"):
        Task(length=0, categories=("animals",))


def test_sampled_tasks_are_consistent_and_seeded():
    tasks = sample_tasks(300, seed=3)
    assert tasks == sample_tasks(300, seed=3)
    assert tasks != sample_tasks(300, seed=4)
    assert {len(t.categories) for t in tasks} == {1, 2}
    assert {t.length for t in tasks} == {3, 4, 5}
    assert all(parse_task(t.prompt) == t for t in tasks)


def test_demonstrations_follow_skill():
    tasks = sample_tasks(400, seed=0)
    rng = random.Random(0)
    expert = [oracle_reward(t.prompt, demonstration(t, rng, skill=1.0)) for t in tasks]
    novice = [oracle_reward(t.prompt, demonstration(t, rng, skill=0.0)) for t in tasks]
    assert mean_and_stderr(novice)[0] < mean_and_stderr(expert)[0] - 3.0
    # An expert never slips, never misses the length and never repeats a word.
    for task in tasks[:50]:
        words = demonstration(task, rng, skill=1.0).split()
        assert len(words) == task.length == len(set(words)) and set(words) <= set(task.words)


# ---------------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------------


def test_bradley_terry_and_sigmoid():
    assert sigmoid(0.0) == 0.5
    assert sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0
    assert bradley_terry(2.0, 1.0, temperature=2.0) == pytest.approx(1 / (1 + math.exp(-0.5)))
    assert bradley_terry(2.0, 1.0, temperature=0.0) == 1.0
    assert bradley_terry(1.0, 1.0, temperature=0.0) == 0.5


def test_label_noise_probability():
    noise = LabelNoise(temperature=1.0, flip_rate=0.2)
    p = 1 / (1 + math.exp(-1.0))
    assert noise.prob_first_preferred(2.0, 1.0) == pytest.approx(0.8 * p + 0.2 * (1 - p))
    with pytest.raises(ValueError, match="flip_rate"):
        LabelNoise(flip_rate=0.7)


def _pairs(n, reward_a, reward_b):
    return [ResponsePair(TASK, f"a{i}", f"b{i}", reward_a, reward_b) for i in range(n)]


def test_flip_rate_matches_the_setting():
    # Without Bradley-Terry noise, the only wrong labels are the flips.
    labels = human_labels(_pairs(20000, 3.0, 1.0), LabelNoise(temperature=0.0, flip_rate=0.15), seed=0)
    wrong = sum(not label.correct for label in labels) / len(labels)
    assert wrong == pytest.approx(0.15, abs=0.01)  # 4 standard errors


def test_bradley_terry_noise_rate_matches_the_setting():
    labels = human_labels(_pairs(20000, 1.5, 0.5), LabelNoise(temperature=1.0, flip_rate=0.0), seed=1)
    right = sum(label.correct for label in labels) / len(labels)
    assert right == pytest.approx(sigmoid(1.0), abs=0.013)
    tie = human_labels(_pairs(4000, 1.0, 1.0), LabelNoise(), seed=2)
    assert all(label.correct is None for label in tie)
    assert sum(label.chosen.startswith("a") for label in tie) / 4000 == pytest.approx(0.5, abs=0.03)


def test_response_pairs_take_two_samples_and_skip_identical_ones():
    pairs = response_pairs([TASK, TASK], [["dog owl", "hen", "cat"], [" cat", "cat "]])
    assert len(pairs) == 1
    assert (pairs[0].a, pairs[0].b, pairs[0].reward_a, pairs[0].reward_b) == ("dog owl", "hen", 4.0 - 1.0, 0.0 - 1.5)
    with pytest.raises(ValueError, match="Need two responses per task"):
        response_pairs([TASK], [["dog"]])


def test_gold_labels_order_pairs_and_drop_ties():
    pairs = [
        ResponsePair(TASK, "good", "bad", 3.0, 1.0),
        ResponsePair(TASK, "bad", "good", 1.0, 3.0),
        ResponsePair(TASK, "x", "y", 2.0, 2.0),
    ]
    gold = gold_labels(pairs)
    assert [(g.chosen, g.rejected) for g in gold] == [("good", "bad"), ("good", "bad")]
    assert pairs[0].gold == 0 and pairs[1].gold == 1 and pairs[2].gold is None


def test_judge_bias_probability():
    bias = JudgeBias(position_bias=0.3, temperature=0.5)
    assert bias.prob_answer_1(1.0, 1.0) == pytest.approx(0.3 + 0.7 * 0.5)
    assert bias.prob_answer_1(1.0, 2.0) == pytest.approx(0.3 + 0.7 * sigmoid(-2.0))
    # Averaging both orders removes the bias: (P_ab(1) + P_ba(2)) / 2 is on the oracle's side of 1/2.
    p_ab, p_ba = bias.prob_answer_1(1.0, 1.25), bias.prob_answer_1(1.25, 1.0)
    assert p_ab > 0.5  # one order alone prefers the worse response shown first
    assert (p_ab + (1 - p_ba)) / 2 < 0.5


# ---------------------------------------------------------------------------------------------------------------
# Judge prompt format
# ---------------------------------------------------------------------------------------------------------------


def test_judge_request_layout():
    request = judge_training_text(
        [{"role": "user", "content": PROMPT}], [{"role": "assistant", "content": " cat bee"}], "dog\n"
    )
    assert request == (
        f"{JUDGE_TEMPLATE.preamble}\n\n"
        "Context:\nUser: Write 4 animals.\n\n"
        "Response 1:\ncat bee\n\n"
        "Response 2:\ndog\n\n"
        "Preferred Response="
    )
    assert judge_training_text(PROMPT, "a", "b").startswith(f"{JUDGE_TEMPLATE.preamble}\n\nContext:\n{PROMPT}\n\n")


# ---------------------------------------------------------------------------------------------------------------
# Determinism and sizes
# ---------------------------------------------------------------------------------------------------------------


def test_world_data_is_deterministic_in_the_seed():
    sizes = DemoSizes.quick()
    first, again = build_world_data(sizes), build_world_data(sizes)
    assert first == again
    other = build_world_data(DemoSizes.quick(seed=1))
    assert other.human_tasks != first.human_tasks and other.sft_demos != first.sft_demos


def test_world_data_shapes():
    sizes = DemoSizes.quick()
    world = build_world_data(sizes)
    assert len(world.sft_tasks) == len(world.sft_demos) == sizes.sft_prompts
    assert len(world.human_tasks) == sizes.human_pairs and len(world.eval_tasks) == sizes.eval_pairs
    assert (len(world.won_tasks), len(world.bon_tasks), len(world.rrhf_tasks)) == (
        sizes.won_prompts,
        sizes.bon_prompts,
        sizes.rrhf_prompts,
    )
    assert len(world.judge_requests) == len(world.judge_targets) == 2 * sizes.judge_pairs
    assert all(r.endswith("Preferred Response=") for r in world.judge_requests)
    # The two orders of a pair come one after the other, with mirrored content.
    assert world.judge_requests[0].split("Response 1:")[1].split("Response 2:")[0] in world.judge_requests[1]


def test_sizes_validation():
    with pytest.raises(ValueError, match="`won_n` must be >= 2"):
        DemoSizes.quick(won_n=1)
    with pytest.raises(ValueError, match="`rm_epochs` must be > 0"):
        DemoSizes.quick(rm_epochs=0)


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------


def test_pairwise_accuracy():
    assert pairwise_accuracy([1.0, 2.0, 0.0, 5.0], [0.0, 3.0, 0.0, 1.0]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    with pytest.raises(ValueError, match="2 chosen scores but 1 rejected"):
        pairwise_accuracy([1.0, 2.0], [0.0])


def test_paired_difference_by_hand():
    a, b = [1.0, 1.0, 0.0, 0.5], [0.0, 1.0, 0.0, 1.0]
    # differences 1, 0, 0, -0.5: mean 0.125, sample variance (0.765625 + 2 * 0.015625 + 0.390625) / 3 = 0.395833
    difference, stderr = paired_difference(a, b)
    assert difference == pytest.approx(0.125)
    assert stderr == pytest.approx(math.sqrt(0.3958333 / 4), rel=1e-5)
    with pytest.raises(ValueError, match="same pairs"):
        paired_difference(a, b[:3])


def test_judge_accuracy():
    assert judge_accuracy([0.9, 0.2, 0.5, 0.6], [True, True, False, False]) == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    with pytest.raises(ValueError, match="2 probabilities but 1 gold"):
        judge_accuracy([0.9, 0.2], [True])


def test_mean_and_stderr():
    assert mean_and_stderr([2.0]) == (2.0, 0.0)
    mean, stderr = mean_and_stderr([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and stderr == pytest.approx(math.sqrt((1.5**2 * 2 + 0.5**2 * 2) / 3 / 4))

"""`trl-won demo --study rlaif --quick`: judges of two sizes on one seed, measured as the demo measures its judge.

Checked against independent computations: the measurements recomputed from the stored per-pair probabilities by a
direct loop, the ideal judge from `JudgeBias` (and its closed form), the judge of the demo's size against
`DemoPipeline`'s own judge of the same seed, and the over-seeds aggregation against `mean_and_stderr`.
"""

import json
import math

import pytest

from trl_won.cli.main import main
from trl_won.demo import DemoPipeline, DemoSizes
from trl_won.demo.evaluation import mean_and_stderr
from trl_won.demo.labels import JudgeBias
from trl_won.demo.studies.rlaif import MEASURES, QUICK_JUDGE_SIZES, JudgeSize, flip_threshold, summarize


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("study-rlaif")
    assert main(["demo", "--study", "rlaif", "--quick", "--seeds", "0", "--output_dir", str(output_dir)]) == 0
    return json.loads((output_dir / "study.json").read_text()), output_dir


def test_writes_files_with_every_judge_and_sane_numbers(study):
    results, output_dir = study
    assert (output_dir / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (output_dir / "study.md").read_text()
    assert "## What shows and what does not" in report and "![RLAIF study](study.png)" in report
    assert results["seeds"] == [0] and list(results["per_seed"]) == ["0"]
    judges = results["per_seed"]["0"]["judges"]
    assert list(judges) == [size.name for size in QUICK_JUDGE_SIZES]
    parameters = [judges[size.name]["parameters"] for size in QUICK_JUDGE_SIZES]
    assert parameters == sorted(parameters) and parameters[0] < parameters[1]
    for size in QUICK_JUDGE_SIZES:
        entry = judges[size.name]
        assert all(0.0 <= entry[key] <= 1.0 for key in MEASURES)
        assert entry["pairs_judged"] == len(results["per_seed"]["0"]["pairs"]["a_better"]) > 0
        summary = results["summary"]["judges"][size.name]
        assert summary["same_position_rate"]["mean"] == entry["same_position_rate"]
        assert summary["same_position_rate"]["stderr"] == 0.0  # one seed
        assert f"| {entry['parameters']:,} | {100 * entry['alignment_one_order']:.1f} ± 0.0 |" in report


def test_measurements_equal_a_direct_loop_over_the_stored_probabilities(study):
    results, _ = study
    seed = results["per_seed"]["0"]
    a_better = seed["pairs"]["a_better"]
    for entry in seed["judges"].values():
        one_order = averaged = first = same_position = graded = 0.0
        for p_first, p_second, better in zip(entry["p_a_first"], entry["p_a_second"], a_better, strict=True):
            one_order += 0.5 if p_first == 0.5 else float((p_first > 0.5) == better)
            p = (p_first + p_second) / 2
            averaged += 0.5 if p == 0.5 else float((p > 0.5) == better)
            # Verdicts for the response shown first: a when a is first, b (P = 1 - p_second) when b is first.
            first += (p_first > 0.5) + (1 - p_second > 0.5)
            if p_first != 0.5 and p_second != 0.5:
                graded += 1
                # The same position in both orders: a preferred in one order and not in the other.
                same_position += (p_first > 0.5) != (p_second > 0.5)
        n = len(a_better)
        assert entry["alignment_one_order"] == pytest.approx(one_order / n, abs=1e-12)
        assert entry["alignment_order_averaged"] == pytest.approx(averaged / n, abs=1e-12)
        assert entry["first_position_preference"] == pytest.approx(first / (2 * n), abs=1e-12)
        assert entry["same_position_rate"] == pytest.approx(same_position / graded, abs=1e-12)


def test_ideal_judge_equals_its_targets_from_judge_bias(study):
    results, _ = study
    seed = results["per_seed"]["0"]
    pairs, ideal = seed["pairs"], seed["ideal"]
    bias = JudgeBias()
    assert DemoSizes.quick().judge_bias == bias
    one_order = same_position = first = 0
    for ra, rb, better in zip(pairs["reward_a"], pairs["reward_b"], pairs["a_better"], strict=True):
        assert (ra > rb) == better  # the stored rewards are the pair's, in the order the judge saw them
        p1_a_first, p1_b_first = bias.prob_answer_1(ra, rb), bias.prob_answer_1(rb, ra)
        one_order += (p1_a_first > 0.5) == better
        first += (p1_a_first > 0.5) + (p1_b_first > 0.5)
        same_position += (p1_a_first > 0.5) == (p1_b_first > 0.5)
    n = len(pairs["a_better"])
    assert ideal["alignment_one_order"] == pytest.approx(one_order / n, abs=1e-12)
    assert ideal["first_position_preference"] == pytest.approx(first / (2 * n), abs=1e-12)
    assert ideal["same_position_rate"] == pytest.approx(same_position / n, abs=1e-12)
    # Closed form: both orders answer "1" exactly when 0.7 * sigmoid(2 |d|) < 1/2, i.e. |d| < ln(2.5) / 2 (none of
    # this world's pairs: rewards come in steps of 0.5); averaged, the targets are on the oracle's side on every pair,
    # and the mean P("1") over both orders is 0.3 + 0.7 / 2.
    assert flip_threshold(bias) == pytest.approx(math.log(2.5) / 2)
    close = sum(abs(ra - rb) < math.log(2.5) / 2 for ra, rb in zip(pairs["reward_a"], pairs["reward_b"]))
    assert ideal["same_position_rate"] == pytest.approx(close / n, abs=1e-12)
    assert ideal["alignment_order_averaged"] == 1.0
    assert ideal["mean_p_answer_1"] == pytest.approx(0.65, abs=1e-12)


def test_judge_of_the_demo_size_is_the_demo_pipelines_judge(study, tmp_path):
    """The study's judge of the quick demo's size reproduces `DemoPipeline`'s judge of seed 0, number for number."""
    results, _ = study
    sizes = DemoSizes.quick(seed=0)
    demo_size = JudgeSize(sizes.hidden_size, sizes.num_layers, sizes.num_heads, sizes.num_kv_heads)
    assert demo_size in QUICK_JUDGE_SIZES
    pipeline = DemoPipeline(sizes, str(tmp_path), show_progress=False)
    pipeline.build_world()
    pipeline.build_tokenizer()
    pipeline.train_policy()
    pipeline.label_pairs()
    pipeline.train_judge()
    pipeline.rlaif()
    demo = pipeline.results["judge"]
    study_judge = results["per_seed"]["0"]["judges"][demo_size.name]
    keys = (*MEASURES, "mean_p_answer_1", "pairs_judged", "averaging_gain")
    assert {key: study_judge[key] for key in keys} == {key: demo[key] for key in keys}


def test_summary_is_mean_and_stderr_over_seeds():
    sizes = QUICK_JUDGE_SIZES
    per_seed = {}
    for seed in range(3):
        judges = {
            size.name: {
                "parameters": 100 * (i + 1),
                **{key: 0.1 * seed + 0.05 * i + 0.01 * j for j, key in enumerate(MEASURES)},
            }
            for i, size in enumerate(sizes)
        }
        ideal = {key: 0.3 + 0.1 * seed * j for j, key in enumerate(MEASURES) if key != "label_accuracy"}
        per_seed[seed] = {"judges": judges, "ideal": ideal}
    summary = summarize(per_seed, sizes)
    for size in sizes:
        for key in MEASURES:
            values = [per_seed[s]["judges"][size.name][key] for s in range(3)]
            mean, stderr = mean_and_stderr(values)
            assert summary["judges"][size.name][key] == {"mean": mean, "stderr": stderr, "per_seed": values}
    for key in MEASURES:
        differences = [
            per_seed[s]["judges"][sizes[-1].name][key] - per_seed[s]["judges"][sizes[0].name][key] for s in range(3)
        ]
        assert summary["largest_minus_smallest"][key]["mean"] == pytest.approx(mean_and_stderr(differences)[0])
        assert summary["largest_minus_smallest"][key]["stderr"] == pytest.approx(mean_and_stderr(differences)[1])
    assert "label_accuracy" not in summary["ideal"]
    assert summary["ideal"]["same_position_rate"]["per_seed"] == [
        per_seed[s]["ideal"]["same_position_rate"] for s in range(3)
    ]

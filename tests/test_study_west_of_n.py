"""`trl-won demo --study west-of-n --quick`: every point of the sweep is measured and sane, its numbers equal an
independent run of the demo's own stages, and the aggregation over seeds is the mean and standard error of the
per-seed values."""

import dataclasses
import json
import math
import random

import pytest

from trl_won.cli.main import main
from trl_won.demo.data import build_world_data
from trl_won.demo.evaluation import mean_and_stderr
from trl_won.demo.names import HF50, HF100, WEST_OF_N
from trl_won.demo.pipeline import DemoPipeline
from trl_won.demo.sizes import DemoSizes
from trl_won.demo.studies.west_of_n import BIN_NAMES, TIE, StudyPlan, _aggregate, gap_bin


SEED = 0


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("study-won")
    args = ["demo", "--study", "west-of-n", "--quick", "--seeds", str(SEED), "--output_dir", str(output_dir)]
    assert main(args) == 0
    return json.loads((output_dir / "study.json").read_text()), output_dir


def test_quick_study_measures_every_point(quick_study):
    results, output_dir = quick_study
    plan = StudyPlan.quick()
    arms = plan.arms()
    assert (output_dir / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (output_dir / "study.md").read_text()
    assert report.startswith("# West-of-N study") and "## What shows, and what does not" in report
    (record,) = results["per_seed"]
    assert record["seed"] == SEED and results["seeds"] == [SEED]
    assert set(record["arms"]) == {arm.key for arm in arms} == set(results["summary"]["arms"])
    assert {arm.n for arm in arms if arm.group == "n"} == set(plan.n_values)
    assert {arm.prompts for arm in arms if arm.group == "prompts"} == set(plan.prompt_counts[1:])
    hf50, hf100 = (record["references"][name]["accuracy"] for name in (HF50, HF100))
    for arm in arms:
        point = record["arms"][arm.key]
        assert 0.0 <= point["accuracy"] <= 1.0 and 0.0 <= point["pair_accuracy"] <= 1.0, arm.key
        assert 0 < point["pairs"] <= point["generated_pairs"] <= arm.prompts, arm.key
        # Paired differences on the same held-out pairs are the differences of the accuracies.
        assert point["vs_hf50"]["difference"] == pytest.approx(point["accuracy"] - hf50)
        assert point["vs_hf100"]["difference"] == pytest.approx(point["accuracy"] - hf100)
        assert point["vs_hf50"]["stderr"] >= 0
        # The accuracy split by oracle gap adds back up to the accuracy, weighted by the held-out pairs per bin.
        shares = record["held_out_gap_shares"]
        by_gap = point["accuracy_by_gap"]
        assert sum(shares[b] * (by_gap[b] or 0.0) for b in BIN_NAMES) == pytest.approx(point["accuracy"])
        assert sum(point["pair_gap_shares"].values()) == pytest.approx(1.0)
        if (
            arm.labeler == "oracle" or arm.relabel
        ):  # perfect labels: the oracle agrees with every pair, and no pair is an oracle tie
            assert point["pair_accuracy"] == 1.0 and point["oracle_ties"] == 0.0 and point["mean_oracle_gap"] > 0
        if arm.mix == "confident 1:1":  # the paper's mix: as many generated pairs as HF50% has
            assert point["training_pairs"] == 2 * record["hf50_pairs"]
        elif arm.mix == "pairs only":
            assert point["training_pairs"] == point["pairs"]
        else:
            assert point["training_pairs"] == record["hf50_pairs"] + point["pairs"]
    assert record["held_out_gap_shares"][TIE] == 0.0  # gold labels leave oracle ties out
    # Filters keep a subset of the generated pairs; the confidence quantile 0.5 keeps about half.
    assert record["arms"]["confidence filter 0.5"]["pairs"] < record["arms"][plan.reference_key]["pairs"]
    for name, comparison in record["comparisons"].items():
        a, b = name.split(" vs ")
        accuracy = {HF50: hf50, HF100: hf100, **{k: v["accuracy"] for k, v in record["arms"].items()}}
        assert comparison["difference"] == pytest.approx(accuracy[a] - accuracy[b])
    assert math.isfinite(results["summary"]["seconds_per_seed"]["mean"])


def test_oracle_picks_from_the_same_samples(quick_study):
    """The oracle best/worst arm differs from the West-of-N student only in who picks: same prompts, same samples."""
    from trl_won.west_of_n.storage import read_results

    _, output_dir = quick_study
    plan = StudyPlan.quick()
    arms = {arm.key: arm for arm in plan.arms()}
    pairs_dirs = output_dir / f"seed-{SEED}" / "west_of_n"
    by_hf50 = read_results(pairs_dirs / arms[plan.reference_key].pairs_name)
    by_oracle = read_results(pairs_dirs / arms["oracle best/worst"].pairs_name)
    assert len(by_hf50) == plan.prompt_counts[0] and by_hf50.keys() == by_oracle.keys()
    assert all(by_hf50[i].completions == by_oracle[i].completions for i in by_hf50)
    assert any(by_hf50[i].chosen != by_oracle[i].chosen for i in by_hf50)  # but they pick differently


def test_quick_study_equals_the_demo_stages(quick_study, tmp_path):
    """The study's HF50%, HF100% and West-of-N student at the demo's N and prompts equal the demo's own stages
    (`DemoPipeline.west_of_n`, on the demo's `won_prompts`; the study draws twice as many West-of-N prompts and uses
    the first of them, which must move nothing else)."""
    results, _ = quick_study
    (record,) = results["per_seed"]
    pipeline = DemoPipeline(DemoSizes.quick(seed=SEED), str(tmp_path), show_progress=False)
    pipeline.build_world()
    pipeline.build_tokenizer()
    pipeline.train_policy()
    pipeline.label_pairs()
    pipeline.train_human_reward_models()
    pipeline.west_of_n()
    accuracy = pipeline.results["reward_model_accuracy"]
    assert record["references"][HF50]["accuracy"] == accuracy[HF50]
    assert record["references"][HF100]["accuracy"] == accuracy[HF100]
    point = record["arms"][StudyPlan.quick().reference_key]
    assert point["accuracy"] == accuracy[WEST_OF_N]
    demo = pipeline.results["west_of_n"][WEST_OF_N]
    assert (point["pairs"], point["pair_accuracy"], point["mean_oracle_gap"]) == (
        demo["pairs"],
        demo["pair_accuracy"],
        demo["mean_oracle_gap"],
    )


def test_more_west_of_n_prompts_move_no_other_draw():
    sizes = DemoSizes.quick(seed=3)
    world = build_world_data(sizes)
    longer = build_world_data(dataclasses.replace(sizes, won_prompts=4 * sizes.won_prompts))
    assert len(longer.won_tasks) == 4 * len(world.won_tasks)
    assert longer.won_tasks[: len(world.won_tasks)] == world.won_tasks
    for field in dataclasses.fields(world):
        if field.name != "won_tasks":
            assert getattr(longer, field.name) == getattr(world, field.name), field.name


def test_aggregation_is_mean_and_stderr_of_the_seeds():
    plan = StudyPlan.quick()
    rng = random.Random(0)

    def bins(names):
        return {name: rng.random() for name in names}

    def record():
        arms = {}
        for arm in plan.arms():
            arms[arm.key] = {
                "accuracy": rng.random(),
                "pairs": rng.randrange(100),
                "pair_accuracy": rng.random(),
                "oracle_ties": rng.random(),
                "mean_oracle_gap": rng.random(),
                "training_pairs": rng.randrange(100),
                "vs_hf50": {"difference": rng.random(), "stderr": 0.1},
                "vs_hf100": {"difference": rng.random(), "stderr": 0.1},
                "accuracy_by_gap": {**bins(BIN_NAMES), BIN_NAMES[0]: None},
                "pair_gap_shares": bins([TIE, *BIN_NAMES]),
            }
        return {
            "references": {
                name: {"accuracy": rng.random(), "accuracy_by_gap": bins(BIN_NAMES)} for name in (HF50, HF100)
            },
            "held_out_gap_shares": bins(BIN_NAMES),
            "human_pairs_gap_shares": bins([TIE, *BIN_NAMES]),
            "human_label_accuracy": rng.random(),
            "mean_human_pair_gap": rng.random(),
            "mean_held_out_gap": rng.random(),
            "comparisons": {"a vs b": {"difference": rng.random(), "stderr": 0.1}},
            "timings_s": {"total": rng.random()},
            "arms": arms,
        }

    per_seed = [record() for _ in range(3)]
    summary = _aggregate(plan, per_seed)
    key = plan.reference_key
    for stat, values in (
        (summary["references"][HF100]["accuracy"], [r["references"][HF100]["accuracy"] for r in per_seed]),
        (summary["arms"][key]["accuracy"], [r["arms"][key]["accuracy"] for r in per_seed]),
        (summary["arms"][key]["vs_hf100"], [r["arms"][key]["vs_hf100"]["difference"] for r in per_seed]),
        (
            summary["arms"][key]["accuracy_by_gap"][BIN_NAMES[1]],
            [r["arms"][key]["accuracy_by_gap"][BIN_NAMES[1]] for r in per_seed],
        ),
        (summary["comparisons"]["a vs b"], [r["comparisons"]["a vs b"]["difference"] for r in per_seed]),
    ):
        assert (stat["mean"], stat["stderr"]) == mean_and_stderr(values) and stat["per_seed"] == values
    assert summary["arms"][key]["accuracy_by_gap"][BIN_NAMES[0]] is None  # an empty bin in every seed


def test_gap_bins_and_plan_checks():
    assert gap_bin(0.0) == TIE
    assert [gap_bin(g) for g in (0.25, 0.5, -0.75, 1.5, 2.0, -7.0)] == [
        BIN_NAMES[0],
        BIN_NAMES[0],
        BIN_NAMES[1],
        BIN_NAMES[2],
        BIN_NAMES[2],
        BIN_NAMES[3],
    ]
    with pytest.raises(ValueError, match="not a finite number"):
        gap_bin(math.nan)
    sizes = DemoSizes.quick()
    with pytest.raises(ValueError, match="must be one of the N values"):
        StudyPlan(sizes, (2, 4), (sizes.won_prompts,), n=8)
    with pytest.raises(ValueError, match="won_prompts"):
        StudyPlan(sizes, (2, 4), (2 * sizes.won_prompts,), n=4)
    # The full plan: N in {2, ..., 32} on the demo's prompts, up to 4 times as many prompts at N = 16.
    full = StudyPlan.full()
    assert full.n_values == (2, 4, 8, 16, 32) and full.prompt_counts == (750, 1500, 3000) and full.n == 16


def test_rerun_reuses_the_finished_seeds(quick_study, monkeypatch):
    """A finished seed is saved as it ends; a rerun of the same plan reuses it instead of training again."""
    from trl_won.demo.studies import west_of_n

    results, output_dir = quick_study

    def no_training(self):
        raise AssertionError("the saved seed should have been reused")

    monkeypatch.setattr(west_of_n._Seed, "build", no_training)
    args = ["demo", "--study", "west-of-n", "--quick", "--seeds", str(SEED), "--output_dir", str(output_dir)]
    assert main(args) == 0
    again = json.loads((output_dir / "study.json").read_text())
    assert again["per_seed"] == results["per_seed"] and again["summary"] == results["summary"]
    record = output_dir / f"seed-{SEED}" / "record.json"
    record.write_text("{not json")
    with pytest.raises(ValueError, match="delete it to run that seed again"):
        main(args)

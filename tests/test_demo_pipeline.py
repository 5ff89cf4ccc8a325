"""`trl-won demo --quick` end to end: every stage runs, every number is sane, report, figure and models are written."""

import contextlib
import io
import json
import math

import pytest

from trl_won.cli.main import main
from trl_won.demo.names import BEST_RANDOM, HF50, HF100, JUDGE_LABELS, NAIVE, ORACLE, RRHF_ON_POLICY, SFT, WEST_OF_N
from trl_won.demo.report import verdict, verdict_comparable
from trl_won.demo.sizes import DemoSizes


@pytest.fixture(scope="module")
def quick_run_and_output(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    # Pairs left by an earlier run with other models: the demo must replace them, not resume from them.
    stale = output_dir / "west_of_n" / "west_of_n"
    stale.mkdir(parents=True)
    (stale / "manifest.json").write_text(json.dumps({"policy": "an older policy", "n": 99}))
    printed = io.StringIO()  # what the terminal shows: stdout and stderr (progress bars) together
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        assert main(["demo", "--quick", "--output_dir", str(output_dir)]) == 0
    return json.loads((output_dir / "results.json").read_text()), output_dir, printed.getvalue()


@pytest.fixture(scope="module")
def quick_run(quick_run_and_output):
    results, output_dir, _ = quick_run_and_output
    return results, output_dir


def test_quick_run_shows_one_line_per_stage_and_no_library_noise(quick_run_and_output):
    """The terminal shows one progress bar per stage (only while it runs) and a summary line when it ends; not the
    trainers' own bars and metric dicts, nor the bars of loading weights or tokenizing datasets."""
    results, _, printed = quick_run_and_output
    lines = [line for line in printed.replace("\r", "\n").splitlines() if line.startswith("[demo] ")]
    stages = [name for name in results["timings_s"] if name != "total"]
    assert [line.removeprefix("[demo] ").split(":")[0] for line in lines] == stages
    accuracies = results["reward_model_accuracy"]
    summary = next(line for line in lines if line.startswith("[demo] reward models"))
    assert f"{HF50} {100 * accuracies[HF50]:.1f}%" in summary and f"{HF100} {100 * accuracies[HF100]:.1f}%" in summary
    for noise in ("train_runtime", "Tokenizing", "Loading weights", "Writing model shards", "Sampling", "Scoring"):
        assert noise not in printed, noise
    # The bars that are shown are the stages' own (named after the stage).
    bars = {line.split(":")[0].strip() for line in printed.replace("\r", "\n").splitlines() if "%|" in line}
    assert bars <= set(stages)


def test_quick_run_reports_every_measurement(quick_run):
    results, _ = quick_run
    accuracies = results["reward_model_accuracy"]
    assert set(accuracies) == {HF50, HF100, WEST_OF_N, NAIVE, BEST_RANDOM, JUDGE_LABELS}
    assert all(0.0 <= a <= 1.0 for a in accuracies.values())
    rewards = results["policy_oracle_reward"]
    n = DemoSizes.quick().bon_n
    expected = {SFT, f"Best-of-{n} ({ORACLE})", f"Best-of-{n} ({HF50})", f"RRHF ({HF100})"}
    assert expected | {f"RRHF ({JUDGE_LABELS})", f"RRHF ({ORACLE})"} <= set(rewards)
    assert all(math.isfinite(r) for r in rewards.values())
    assert set(results["policy_oracle_reward_stderr"]) == set(rewards)
    # Best-of-N by the oracle is the best any selection from the same samples can do.
    assert rewards[f"Best-of-{n} ({ORACLE})"] >= max(v for k, v in rewards.items() if k.startswith("Best-of"))
    judge = results["judge"]
    for key in ("alignment_one_order", "alignment_order_averaged", "same_position_rate", "first_position_preference"):
        assert 0.0 <= judge[key] <= 1.0
    assert 0.0 <= judge["label_accuracy"] <= 1.0 and judge["pairs_judged"] > 0
    for details in results["west_of_n"].values():
        assert details["pairs"] > 0 and 0.0 <= details["pair_accuracy"] <= 1.0
    assert 0.0 < results["world"]["human_label_accuracy"] < 1.0
    comparison = results["reward_model_comparisons"][f"{WEST_OF_N} vs {HF50}"]
    assert comparison["difference"] == pytest.approx(accuracies[WEST_OF_N] - accuracies[HF50])
    assert comparison["stderr"] >= 0
    stages = results["timings_s"]
    assert stages["total"] == pytest.approx(sum(v for k, v in stages.items() if k != "total"), abs=0.05)


@pytest.mark.parametrize(
    "difference, stderr, beats, comparable",
    [
        (0.05, 0.02, "shows", "shows (better)"),
        (0.01, 0.02, "within noise", "shows (within noise)"),
        (-0.03, 0.02, "does not show", "shows (within noise)"),
        (-0.05, 0.02, "does not show", "does not show"),
    ],
)
def test_report_verdicts_against_two_standard_errors(difference, stderr, beats, comparable):
    assert verdict(difference, stderr) == beats
    assert verdict_comparable(difference, stderr) == comparable


def test_quick_run_writes_report_and_figure(quick_run):
    results, output_dir = quick_run
    report = (output_dir / "report.md").read_text()
    assert report.startswith("# trl-won demo report")
    assert "## What the numbers say" in report and "![Main comparisons](demo.png)" in report
    for name, accuracy in results["reward_model_accuracy"].items():
        assert f"| {name} | {100 * accuracy:.1f}% |" in report
    # Each paper's effect gets a verdict.
    assert report.count("**West-of-N") == 4 and "**Averaging both orders" in report
    assert (output_dir / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_run_has_the_on_policy_rrhf_arms(quick_run):
    """On-policy RRHF (samples of the policy in training, ranked by the HF100% reward model or the oracle) beside the
    offline arms."""
    results, output_dir = quick_run
    sizes = DemoSizes.quick()
    rewards = results["policy_oracle_reward"]
    report = (output_dir / "report.md").read_text()
    for reward_model in (HF100, ORACLE):
        name = f"{RRHF_ON_POLICY} ({reward_model})"
        assert math.isfinite(rewards[name]) and results["policy_oracle_reward_stderr"][name] >= 0
        assert f"RRHF ({reward_model})" in rewards  # the offline arm is still there
        details = results["rrhf_on_policy"][reward_model]
        assert details["samples_per_prompt"] == sizes.rrhf_k and details["prompts"] == sizes.rrhf_prompts
        # One generation round per optimizer step: 8 prompts per step, one epoch.
        assert details["steps"] == math.ceil(sizes.rrhf_prompts / 8)
        assert math.isfinite(details["reward_model_score_first_step"])
        assert math.isfinite(details["reward_model_score_last_step"])
        assert results["timings_s"][name] > 0
        assert f"| {name} | {rewards[name]:.2f} ± " in report
    # With the oracle as its reward, the first round's samples are the SFT policy's: their mean oracle reward is that
    # of the SFT policy's samples, up to sampling noise.
    first = results["rrhf_on_policy"][ORACLE]["reward_model_score_first_step"]
    assert abs(first - rewards[SFT]) < 2.0
    assert "**On-policy RRHF with the HF100% reward model beats SFT" in report
    assert "**On-policy RRHF with the oracle reward beats SFT" in report
    assert "**On-policy RRHF (samples of the policy being trained) beats offline RRHF" in report


def test_quick_run_saves_models_loadable_with_from_pretrained(quick_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_won.demo.judge import build_judge

    _, output_dir = quick_run
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "models" / "policy")
    policy = AutoModelForCausalLM.from_pretrained(output_dir / "models" / "policy")
    assert policy.config.hidden_size == DemoSizes.quick().hidden_size
    # The saved judge answers through the package's TransformersJudge, with "1" and "2" single tokens.
    judge = build_judge(str(output_dir / "models" / "judge"), tokenizer, name="saved-judge")
    assert [tokenizer.convert_ids_to_tokens(list(s)) for s in judge.answer_tokens.sequences] == [["1"], ["2"]]
    prompt = [{"role": "user", "content": "Write 2 animals."}]
    (judgement,) = judge.judge_pairs([prompt], ["dog owl"], ["red"])
    assert 0.0 <= judgement.probability <= 1.0
    # The judge's labels were stored as they were made; the stale West-of-N pairs were replaced.
    assert (output_dir / "judge_labels.sqlite").exists()
    manifest = json.loads((output_dir / "west_of_n" / "west_of_n" / "manifest.json").read_text())
    assert manifest["n"] == DemoSizes.quick().won_n

"""`trl-won demo --study rrhf --quick`: offline, on-policy and both, with the oracle and HF100%, on one seed.

Checked against independent paths: the offline arm and the SFT reference against `DemoPipeline.rrhf` and
`DemoPipeline.best_of_n` of the same seed, the diagnostic arms' rows against the SFT samples they claim to hold, the
along-training logs against the arms' step counts, and the over-seeds aggregation against `mean_and_stderr`.
"""

import json
import math

import pytest

from trl_won.cli.main import main
from trl_won.demo import DemoPipeline, DemoSizes
from trl_won.demo.evaluation import mean_and_stderr
from trl_won.demo.names import HF100, ORACLE, SFT
from trl_won.demo.studies.common import seed_result
from trl_won.demo.studies.rrhf import (
    BOTH,
    OFFLINE,
    ON_POLICY,
    QUICK_EPOCHS,
    arm_key,
    plan,
    sampled_token_rows,
    summarize,
)
from trl_won.demo.world import oracle_reward


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("study-rrhf")
    assert main(["demo", "--study", "rrhf", "--quick", "--seeds", "0", "--output_dir", str(output_dir)]) == 0
    return json.loads((output_dir / "study.json").read_text()), output_dir


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The demo's own offline RRHF with the oracle, and its SFT reference, for seed 0."""
    pipeline = DemoPipeline(DemoSizes.quick(seed=0), str(tmp_path_factory.mktemp("demo")), show_progress=False)
    pipeline.build_world()
    pipeline.build_tokenizer()
    pipeline.train_policy()
    pipeline.best_of_n()
    pipeline.rrhf(reward_models=(ORACLE,))
    return pipeline


def test_writes_files_with_every_arm(study):
    results, output_dir = study
    assert (output_dir / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (output_dir / "study.md").read_text()
    assert "## What shows and what does not" in report and "![RRHF study](study.png)" in report
    seed = results["per_seed"]["0"]
    assert list(seed["arms"]) == [arm_key(*run) for run in plan(QUICK_EPOCHS)]
    assert 0.0 <= seed["hf100_accuracy"] <= 1.0 and math.isfinite(seed["sft_oracle_reward"])
    for key, arm in seed["arms"].items():
        assert math.isfinite(arm["oracle_reward"]) and arm["oracle_reward_stderr_over_prompts"] > 0
        assert results["summary"]["arms"][key] == {
            "mean": arm["oracle_reward"],
            "stderr": 0.0,
            "per_seed": [arm["oracle_reward"]],
        }
    for reward in (ORACLE, HF100):
        for arm in (OFFLINE, ON_POLICY, BOTH):
            assert (
                f"| {reward} | {arm} | {seed['arms'][arm_key(arm, reward, 1)]['oracle_reward']:.2f} ± 0.00 |" in report
            )


def test_on_policy_arms_log_every_step(study):
    results, _ = study
    sizes = DemoSizes.quick()
    arms = results["per_seed"]["0"]["arms"]
    for reward in (ORACLE, HF100):
        for arm in (ON_POLICY, BOTH):
            logs = arms[arm_key(arm, reward, 1)]
            # One generation round per step: 8 prompts per step, one epoch (both: only the offline rows' prompts).
            assert len(logs["step_reward_score"]) == len(logs["step_oracle_reward"]) == logs["steps"] > 0
            if arm == ON_POLICY:
                assert logs["steps"] == math.ceil(sizes.rrhf_prompts / 8)
    oracle_arm, hf100_arm = arms[arm_key(ON_POLICY, ORACLE, 1)], arms[arm_key(ON_POLICY, HF100, 1)]
    assert oracle_arm["step_reward_score"] == oracle_arm["step_oracle_reward"]  # ranked by the oracle
    assert hf100_arm["step_reward_score"] != hf100_arm["step_oracle_reward"]  # the reward model's scale is its own


def test_offline_arm_and_sft_equal_the_demo_pipelines(study, pipeline):
    results, _ = study
    seed = results["per_seed"]["0"]
    demo = pipeline.results["policy_oracle_reward"]
    assert seed["sft_oracle_reward"] == demo[SFT]
    assert seed["arms"][arm_key(OFFLINE, ORACLE, 1)]["oracle_reward"] == demo[f"RRHF ({ORACLE})"]
    assert seed["offline_prompts"] == len(pipeline.rrhf_offline_rows()["prompt"])


def test_sampled_token_rows_hold_the_sft_samples(pipeline):
    tokenizer = pipeline.policy_tokenizer
    prompts, samples = pipeline.rrhf_candidates()
    offline = pipeline.rrhf_offline_rows()
    every, deduplicated = sampled_token_rows(pipeline, deduplicate=False), sampled_token_rows(pipeline, True)
    # Every sample kept: each prompt's k samples, as sampled (EOS last exactly when the sample finished).
    assert len(every["completion_ids"]) == len(prompts)
    for group, ids, rewards, prompt in zip(samples, every["completion_ids"], every["rewards"], prompts, strict=True):
        assert ids == [s.token_ids for s in group]
        assert [i[-1] == tokenizer.eos_token_id for i in ids] == [s.finished for s in group]
        assert rewards == [oracle_reward(prompt[0]["content"], s.text) for s in group]
    # Deduplicated: the offline arm's candidates, text for text, in sampled tokens.
    texts = [[tokenizer.decode(i, skip_special_tokens=True) for i in row] for row in deduplicated["completion_ids"]]
    assert [[t.strip() for t in row] for row in texts] == [
        [c[0]["content"].strip() for c in row] for row in offline["completions"]
    ]


def test_summary_is_mean_and_stderr_over_seeds():
    epochs = (1, 2)
    keys = [arm_key(*run) for run in plan(epochs)]
    per_seed = {
        seed: {
            "sft_oracle_reward": 3.0 + 0.1 * seed,
            "hf100_accuracy": 0.7 + 0.01 * seed,
            "arms": {key: {"oracle_reward": 4.0 + 0.3 * seed * (i % 3) + 0.01 * i} for i, key in enumerate(keys)},
        }
        for seed in range(3)
    }
    summary = summarize(per_seed, epochs)
    sft = [per_seed[s]["sft_oracle_reward"] for s in range(3)]
    assert (summary[SFT]["mean"], summary[SFT]["stderr"]) == mean_and_stderr(sft)
    for key in keys:
        values = [per_seed[s]["arms"][key]["oracle_reward"] for s in range(3)]
        assert (summary["arms"][key]["mean"], summary["arms"][key]["stderr"]) == mean_and_stderr(values)
        difference = mean_and_stderr([v - b for v, b in zip(values, sft)])
        assert (summary["minus_sft"][key]["mean"], summary["minus_sft"][key]["stderr"]) == pytest.approx(difference)
    better, worse = arm_key(ON_POLICY, HF100, 2), arm_key(OFFLINE, HF100, 2)
    difference = [
        per_seed[s]["arms"][better]["oracle_reward"] - per_seed[s]["arms"][worse]["oracle_reward"] for s in range(3)
    ]
    comparison = summary["comparisons"][f"{better} vs {worse}"]
    assert (comparison["mean"], comparison["stderr"]) == pytest.approx(mean_and_stderr(difference))


def test_seed_results_are_kept_and_reused_for_the_same_setting(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"oracle_reward": 1.5, "epochs": (1, 2)}

    path = tmp_path / "seed-0" / "seed.json"
    assert seed_result(path, {"epochs": [1, 2]}, compute) == {"oracle_reward": 1.5, "epochs": [1, 2]}
    assert seed_result(path, {"epochs": [1, 2]}, compute) == {"oracle_reward": 1.5, "epochs": [1, 2]}
    assert len(calls) == 1  # the second call read the file
    seed_result(path, {"epochs": [1, 2, 4]}, compute)  # another sweep: computed again, and the file replaced
    assert len(calls) == 2 and json.loads(path.read_text())["identity"] == {"epochs": [1, 2, 4]}
    path.write_text('{"identity": ')  # a damaged file
    with pytest.raises(ValueError, match="seed.json is not valid JSON.*delete it"):
        seed_result(path, {"epochs": [1, 2, 4]}, compute)

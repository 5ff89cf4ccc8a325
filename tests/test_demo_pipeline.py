"""The whole demo pipeline at the quick size: every stage runs and every number is sane."""

import json
import math

import pytest

from trl_won.demo.pipeline import (
    BEST_RANDOM,
    HF50,
    HF100,
    JUDGE_LABELS,
    NAIVE,
    ORACLE,
    WEST_OF_N,
    DemoPipeline,
)
from trl_won.demo.sizes import DemoSizes


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    pipeline = DemoPipeline(DemoSizes.quick(), str(output_dir), show_progress=False)
    return pipeline, pipeline.run(), output_dir


def test_quick_run_reports_every_measurement(quick_run):
    _, results, output_dir = quick_run
    accuracies = results["reward_model_accuracy"]
    assert set(accuracies) == {HF50, HF100, WEST_OF_N, NAIVE, BEST_RANDOM, JUDGE_LABELS}
    assert all(0.0 <= a <= 1.0 for a in accuracies.values())
    rewards = results["policy_oracle_reward"]
    n = DemoSizes.quick().bon_n
    expected = {"SFT policy", f"Best-of-{n} ({ORACLE})", f"Best-of-{n} ({HF50})", f"RRHF ({HF100})"}
    assert expected | {f"RRHF ({JUDGE_LABELS})", f"RRHF ({ORACLE})"} <= set(rewards)
    assert all(math.isfinite(r) for r in rewards.values())
    # Best-of-N by the oracle is the best any selection from the same samples can do.
    assert rewards[f"Best-of-{n} ({ORACLE})"] >= max(v for k, v in rewards.items() if k.startswith("Best-of"))
    judge = results["judge"]
    for key in ("alignment_one_order", "alignment_order_averaged", "same_position_rate", "mean_p_answer_1"):
        assert 0.0 <= judge[key] <= 1.0
    for details in results["west_of_n"].values():
        assert details["pairs"] > 0 and 0.0 <= details["pair_accuracy"] <= 1.0
    assert 0.0 < results["world"]["human_label_accuracy"] < 1.0
    stages = results["timings_s"]
    assert stages["total"] == pytest.approx(sum(v for k, v in stages.items() if k != "total"), abs=0.05)
    assert json.loads((output_dir / "results.json").read_text())["reward_model_accuracy"] == accuracies


def test_quick_run_saves_models_loadable_with_from_pretrained(quick_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pipeline, _, output_dir = quick_run
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "models" / "policy")
    policy = AutoModelForCausalLM.from_pretrained(output_dir / "models" / "policy")
    assert policy.config.hidden_size == DemoSizes.quick().hidden_size
    assert len(tokenizer) == len(pipeline.tokenizer)
    # The world tokenizer keeps the judge's answers single tokens.
    assert tokenizer.convert_ids_to_tokens(pipeline.judge.answer_ids) == ["1", "2"]

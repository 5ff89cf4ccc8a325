import json
import logging
import re
from pathlib import Path

import pytest
from rlaif_helpers import LengthJudge
from trl import DPOConfig, DPOTrainer

from tests.helpers import cpu_training_kwargs
from trl_won.generation import SamplingParams
from trl_won.rlaif import LabelStore, PairwiseJudge, RLAIFLabelerCallback, TransformersJudge
from trl_won.tiny import TOY_PROMPTS, toy_preference_dataset


ROOT = Path(__file__).parents[1]
SAMPLING = SamplingParams(temperature=1.0, max_new_tokens=6)


def dpo_trainer(tiny_paths, tmp_path, **overrides):
    kwargs = cpu_training_kwargs(tmp_path, **{"max_steps": 2, "per_device_train_batch_size": 2, **overrides})
    return DPOTrainer(model=tiny_paths.policy, args=DPOConfig(**kwargs), train_dataset=toy_preference_dataset())


def rounds(tmp_path):
    files = sorted((tmp_path / "rlaif").glob("round-step*.jsonl"))
    return {f.name: [json.loads(line) for line in f.read_text().splitlines()] for f in files}


def rlaif_logs(trainer):
    return [entry for entry in trainer.state.log_history if "rlaif/failures" in entry]


def test_labels_policy_samples_inside_dpo_training(tiny_paths, tmp_path):
    trainer = dpo_trainer(tiny_paths, tmp_path)
    judge = TransformersJudge(tiny_paths.policy)  # a path: loaded on the main process at the first round
    callback = RLAIFLabelerCallback(judge, trainer, prompts=TOY_PROMPTS[:4], label_every=1, sampling_params=SAMPLING)
    trainer.add_callback(callback)
    trainer.train()

    files = rounds(tmp_path)
    assert list(files) == ["round-step0000001.jsonl", "round-step0000002.jsonl"]
    # The documented name is the written one: the pattern in the docstring and in docs/rlaif.md gives these names.
    documented = re.findall(r"round-step\{step[^}]*\}\.jsonl", RLAIFLabelerCallback.__doc__)
    documented += re.findall(r"round-step\{step[^}]*\}\.jsonl", (ROOT / "docs" / "rlaif.md").read_text())
    assert len(documented) == 2 and {name.format(step=s) for name in documented for s in (1, 2)} == set(files)
    for rows in files.values():
        assert len(rows) == 4
        assert {"prompt", "chosen", "rejected", "soft_label", "position_consistent", "step"} <= set(rows[0])
        assert all(0.5 <= r["soft_label"] <= 1 for r in rows)
        assert [r["prompt"] for r in rows] == TOY_PROMPTS[:4]
    logs = rlaif_logs(trainer)
    assert [entry["step"] for entry in logs] == [1, 2]
    for entry in logs:
        assert entry["rlaif/label_count"] == 4 and entry["rlaif/failures"] == 0
        assert 0 <= entry["rlaif/position_consistency"] <= 1 and 0.5 <= entry["rlaif/mean_confidence"] <= 1
        assert "rlaif/win_rate" not in entry  # two policy samples: no reference to win against
    store = LabelStore(tmp_path / "rlaif" / "labels.sqlite")
    assert store.count(judge.fingerprint) == len(
        {(r["prompt"], r["chosen"], r["rejected"]) for f in files.values() for r in f}
    )
    # The trainer's own metrics were still logged at every step.
    assert sum("loss" in entry for entry in trainer.state.log_history) == 2


def test_win_rate_against_reference_completions(tiny_paths, tmp_path):
    trainer = dpo_trainer(tiny_paths, tmp_path, max_steps=1)
    references = ["x" * 3, "a much longer reference completion than the policy writes", "y", "zz"]
    callback = RLAIFLabelerCallback(
        LengthJudge(),
        trainer,
        prompts=TOY_PROMPTS[:4],
        reference_completions=references,
        label_every=1,
        sampling_params=SAMPLING,
    )
    trainer.add_callback(callback)
    trainer.train()
    (rows,) = rounds(tmp_path).values()
    (entry,) = rlaif_logs(trainer)
    # Win rate = mean probability that the policy's completion is preferred over the reference.
    p_policy = [r["soft_label"] if r["policy_is_chosen"] else 1 - r["soft_label"] for r in rows]
    assert entry["rlaif/win_rate"] == pytest.approx(sum(p_policy) / 4)
    assert entry["rlaif/win_rate_hard"] == pytest.approx(sum(p > 0.5 for p in p_policy) / 4)
    for r in rows:
        reference = r["rejected"] if r["policy_is_chosen"] else r["chosen"]
        assert reference in references


def test_reference_model_is_sampled_once_and_reused(tiny_paths, tmp_path):
    trainer = dpo_trainer(tiny_paths, tmp_path)
    callback = RLAIFLabelerCallback(
        LengthJudge(),
        trainer,
        prompts=TOY_PROMPTS[:3],
        reference_model=tiny_paths.policy,
        label_every=1,
        sampling_params=SAMPLING,
    )
    trainer.add_callback(callback)
    trainer.train()
    first, second = rounds(tmp_path).values()

    def references(rows):
        return [r["rejected"] if r["policy_is_chosen"] else r["chosen"] for r in rows]

    assert references(first) == references(second) == [callback._reference_cache[i] for i in range(3)]
    assert all("rlaif/win_rate" in entry for entry in rlaif_logs(trainer))


class BrokenJudge(PairwiseJudge):
    def _judge_pairs(self, prompts, completions_a, completions_b):
        raise ConnectionError("judge server unreachable")

    def fingerprint_fields(self):
        return {"judge": "broken"}


def test_failed_rounds_are_logged_and_counted_and_training_goes_on(tiny_paths, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    trainer = dpo_trainer(tiny_paths, tmp_path)
    callback = RLAIFLabelerCallback(
        BrokenJudge(), trainer, prompts=TOY_PROMPTS[:2], label_every=1, sampling_params=SAMPLING
    )
    trainer.add_callback(callback)
    trainer.train()
    assert trainer.state.global_step == 2
    assert [entry["rlaif/failures"] for entry in rlaif_logs(trainer)] == [1, 2]
    assert "labeling round at step 1 failed" in caplog.text and "judge server unreachable" in caplog.text

    strict = dpo_trainer(tiny_paths, tmp_path / "strict")
    strict.add_callback(
        RLAIFLabelerCallback(
            BrokenJudge(),
            strict,
            prompts=TOY_PROMPTS[:2],
            label_every=1,
            sampling_params=SAMPLING,
            max_consecutive_failures=1,
        )
    )
    with pytest.raises(RuntimeError, match="1 labeling rounds failed in a row"):
        strict.train()


def test_labels_at_epoch_end_by_default_and_validates_arguments(tiny_paths, tmp_path):
    trainer = dpo_trainer(tiny_paths, tmp_path, max_steps=-1, num_train_epochs=1, per_device_train_batch_size=4)
    callback = RLAIFLabelerCallback(
        LengthJudge(), trainer, prompts=TOY_PROMPTS[:2], sampling_params=SAMPLING, label_at_start=True
    )
    trainer.add_callback(callback)
    trainer.train()
    assert list(rounds(tmp_path)) == ["round-step0000000.jsonl", "round-step0000002.jsonl"]
    with pytest.raises(ValueError, match="needs prompts"):
        RLAIFLabelerCallback(LengthJudge(), trainer)
    with pytest.raises(ValueError, match="one reference completion per prompt"):
        RLAIFLabelerCallback(LengthJudge(), trainer, prompts=TOY_PROMPTS[:2], reference_completions=["x"])
    with pytest.raises(ValueError, match="either `reference_model` or `reference_completions`"):
        RLAIFLabelerCallback(LengthJudge(), trainer, prompts=["p"], reference_model="m", reference_completions=["x"])


def test_labels_inside_rrhf_training(tiny_paths, tmp_path):
    from trl_won.rrhf import RRHFConfig, RRHFTrainer
    from trl_won.tiny import toy_ranking_dataset

    args = RRHFConfig(**cpu_training_kwargs(tmp_path, max_steps=2, per_device_train_batch_size=2))
    trainer = RRHFTrainer(tiny_paths.policy, args=args, train_dataset=toy_ranking_dataset(conversational=True))
    prompts = [[{"role": "user", "content": p}] for p in TOY_PROMPTS[:3]]
    callback = RLAIFLabelerCallback(LengthJudge(), trainer, prompts=prompts, label_every=2, sampling_params=SAMPLING)
    trainer.add_callback(callback)
    trainer.train()
    ((name, rows),) = rounds(tmp_path).items()
    assert name == "round-step0000002.jsonl" and len(rows) == 3
    assert rows[0]["prompt"] == prompts[0] and rows[0]["chosen"][0]["role"] == "assistant"
    (entry,) = rlaif_logs(trainer)
    assert entry["rlaif/label_count"] == 3 and entry["rlaif/failures"] == 0
    assert any("rank_loss" in e for e in trainer.state.log_history)  # RRHF's own metrics are intact

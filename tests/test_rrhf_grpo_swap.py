"""Swap RRHF into TRL's own GRPO script with the diff documented in docs/rrhf.md (and README), and run it.

The script is the installed `trl/scripts/grpo.py`, read at test time; the diff is read from docs/rrhf.md and applied
strictly (every context and removed line must match at the line numbers of its hunk header), so the test fails if TRL
changes the lines it touches or if the documented diff is edited into something that does not apply.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


REPO = Path(__file__).resolve().parent.parent
HUNK_HEADER = re.compile(r"^@@ -(\d+),(\d+) \+(\d+),(\d+) @@")


def documented_diff(path: Path) -> str:
    """The ```diff block of `path` that patches `trl/scripts/grpo.py`."""
    blocks = re.findall(r"```diff\n(.*?)```", path.read_text(), flags=re.S)
    matching = [block for block in blocks if block.startswith("--- a/trl/scripts/grpo.py\n")]
    assert len(matching) == 1, f"{path} should hold exactly one diff of trl/scripts/grpo.py, found {len(matching)}"
    return matching[0]


def apply_unified_diff(original: str, diff: str) -> tuple[str, int]:
    """Apply `diff` to `original` strictly; return the patched text and the number of changed lines.

    Changed lines: the larger of the removed and added line counts of each hunk, summed.
    """
    lines = original.split("\n")
    hunks = re.split(r"\n(?=@@ )", diff.split("\n", 2)[2].rstrip("\n"))
    offset = 0  # lines added minus removed by the hunks applied so far
    changed = 0
    for hunk in hunks:
        header, *body = hunk.split("\n")
        body = [line or " " for line in body]  # an empty context line may lose its space in an editor
        match = HUNK_HEADER.match(header)
        assert match, f"not a hunk header: {header!r}"
        old_start, old_count, new_start, new_count = map(int, match.groups())
        old = [line[1:] for line in body if line[:1] in (" ", "-")]
        new = [line[1:] for line in body if line[:1] in (" ", "+")]
        assert all(line[:1] in (" ", "-", "+") for line in body), f"malformed hunk: {hunk!r}"
        assert (len(old), len(new)) == (old_count, new_count), f"hunk counts do not match its lines: {header}"
        assert new_start == old_start + offset, f"hunk {header} does not follow from the hunks before it"
        start = old_start - 1 + offset
        assert lines[start : start + old_count] == old, (
            f"the diff no longer applies to trl/scripts/grpo.py at {header}: expected {old}, found "
            f"{lines[start : start + old_count]}"
        )
        lines[start : start + old_count] = new
        offset += new_count - old_count
        changed += max(sum(line[:1] == "-" for line in body), sum(line[:1] == "+" for line in body))
    return "\n".join(lines), changed


def test_the_readme_shows_the_same_diff_as_docs():
    assert documented_diff(REPO / "README.md") == documented_diff(REPO / "docs" / "rrhf.md")


def test_a_diff_that_no_longer_matches_fails():
    import trl.scripts.grpo as grpo_script

    diff = documented_diff(REPO / "docs" / "rrhf.md")
    original = Path(grpo_script.__file__).read_text()
    with pytest.raises(AssertionError, match="no longer applies"):
        apply_unified_diff(original.replace("from trl import GRPOTrainer,", "from trl import GRPOTrainer ,"), diff)


@pytest.mark.slow
def test_trls_grpo_script_trains_rrhf_after_the_documented_diff(tmp_path, tiny_paths):
    import trl.scripts.grpo as grpo_script

    patched, changed = apply_unified_diff(
        Path(grpo_script.__file__).read_text(), documented_diff(REPO / "docs" / "rrhf.md")
    )
    assert 1 <= changed <= 3
    assert "trl_won" in patched
    script = tmp_path / "grpo_rrhf.py"
    script.write_text(patched)

    # A prompt-only dataset in a local directory (loaded by `load_dataset(dataset_name)`) and a dotted reward function
    # resolved from the working directory, as the script documents.
    data_dir = tmp_path / "prompts"
    data_dir.mkdir()
    prompts = ["The quick brown fox", "Write a short poem about the sea.", "What is the capital of France?", "A cat"]
    (data_dir / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    (tmp_path / "my_rewards.py").write_text(
        "def length_reward(completions, **kwargs):\n    return [float(len(c)) for c in completions]\n"
    )
    output_dir = tmp_path / "out"
    command = [
        sys.executable,
        str(script),
        "--model_name_or_path", tiny_paths.policy,
        "--dataset_name", str(data_dir),
        "--reward_funcs", "my_rewards.length_reward",
        "--output_dir", str(output_dir),
        "--num_generations", "4",
        "--max_completion_length", "8",
        "--per_device_train_batch_size", "2",
        "--max_steps", "2",
        "--learning_rate", "1e-2",
        "--logging_steps", "1",
        "--save_strategy", "no",
        "--report_to", "none",
        "--use_cpu", "True",
        "--bf16", "False",
        "--gradient_checkpointing", "False",
        "--disable_tqdm", "True",
        "--seed", "0",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_DISABLED": "true"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Training completed." in output
    assert "ranking_accuracy" in output and "rank_loss" in output, output[-4000:]

    saved = load_file(output_dir / "model.safetensors")
    before = load_file(Path(tiny_paths.policy) / "model.safetensors")
    assert saved.keys() == before.keys()
    moved = [name for name in saved if not torch.equal(saved[name], before[name])]
    assert moved, "no weight changed: the script did not train"
    config = json.loads((output_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]

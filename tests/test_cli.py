"""`trl-won`: help for every command, clear errors, and one small real run of each subcommand."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trl_won.cli.main import COMMANDS, main


ROOT = Path(__file__).parents[1]


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", ["rrhf", "west-of-n", "label"])
def test_each_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"trl-won {command}" in out
    assert "--load_in_4bit" in out and "--config" in out  # TRL's ModelConfig flags and config files


def test_demo_help_and_size_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "trl-won demo --quick" in out and "--reward_model" in out and "--sizes" in out
    with pytest.raises(SystemExit):
        main(["demo", "--sizes", '{"wonn": 3}'])
    assert "--sizes: unknown size(s) ['wonn']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--sizes", '{"won_n": "many"}'])
    assert "--sizes: 'won_n' must be a number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--sizes", '{"tie_embeddings": 1}'])
    assert "--sizes: 'tie_embeddings' must be true or false" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "trl_won", "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "west-of-n" in result.stdout


def test_unknown_command_and_bad_arguments_are_named(capsys):
    assert main(["rlhf"]) == 2
    assert "unknown command 'rlhf'; expected one of rrhf, west-of-n, label, demo" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["rrhf", "--max_completions", "1"])
    assert exit_info.value.code == 2
    assert "`max_completions` must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["west-of-n", "--n", "many"])
    assert "argument --n: invalid int value: 'many'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["label", "--no_such_flag", "1"])
    assert "--no_such_flag" in capsys.readouterr().err


def test_rrhf_command_trains_and_saves(tiny_paths, tmp_path):
    data = tmp_path / "ranked.jsonl"
    rows = [{"prompt": "Q?", "completions": [" good answer.", " bad."], "rewards": [1.0, 0.0]}] * 4
    data.write_text("\n".join(json.dumps(row) for row in rows))
    output_dir = tmp_path / "rrhf"
    main(
        ["rrhf", "--model_name_or_path", tiny_paths.policy, "--dataset_name", str(data), "--max_steps", "1"]
        + ["--output_dir", str(output_dir), "--report_to", "none", "--per_device_train_batch_size", "2"]
    )
    assert (output_dir / "model.safetensors").exists() and "RRHF" in (output_dir / "README.md").read_text()


def test_config_file(tiny_paths, tmp_path):
    config = tmp_path / "rrhf.yaml"
    output_dir = tmp_path / "from-yaml"
    config.write_text(
        f"model_name_or_path: {tiny_paths.policy}\nmax_steps: 1\noutput_dir: {output_dir}\nreport_to: none\n"
    )
    main(["rrhf", "--config", str(config)])
    assert (output_dir / "model.safetensors").exists()


def test_west_of_n_command_generates_and_trains_the_student(tiny_paths, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Question {i}?"}) for i in range(4)))
    human = tmp_path / "human.jsonl"
    human.write_text("\n".join(json.dumps({"prompt": "Q?", "chosen": " yes.", "rejected": " no."}) for _ in range(4)))
    main(
        [
            "west-of-n",
            "--policy_name_or_path",
            tiny_paths.policy,
            "--reward_model_name_or_path",
            tiny_paths.reward_model,
        ]
        + ["--dataset_name", str(prompts), "--n", "3", "--max_new_tokens", "6", "--pairs_dir", str(tmp_path / "pairs")]
        + ["--train_student", "--human_dataset_name", str(human), "--model_name_or_path", tiny_paths.reward_model]
        + ["--output_dir", str(tmp_path / "student"), "--max_steps", "1", "--report_to", "none"]
    )
    assert (tmp_path / "pairs").is_dir()
    assert (tmp_path / "student" / "model.safetensors").exists()


def test_label_command_writes_labels(tiny_paths, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(
            json.dumps({"prompt": "Q?", "completion_a": f" answer {i}.", "completion_b": " no."}) for i in range(3)
        )
    )
    output_dir = tmp_path / "labels"
    main(
        ["label", "--model_name_or_path", tiny_paths.policy, "--dataset_name", str(pairs)]
        + ["--output_dir", str(output_dir)]
    )
    rows = [json.loads(line) for line in (output_dir / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(0.0 <= row["soft_label"] <= 1.0 for row in rows)

"""`trl-won`: help, TRL's flag names, no silent defaults, exit codes and one-line errors, and a small real run of each
subcommand. (Every help and example command runs as printed in tests/test_cli_examples.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rlaif_server import JudgeServer, Reply, chat_body

from trl_won.cli.main import COMMANDS, main, run_script
from trl_won.tiny import toy_preference_dataset, toy_prompt_dataset, toy_ranking_dataset


ROOT = Path(__file__).parents[1]


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def data(tmp_path):
    """Small local datasets of each shape the commands read."""
    return {
        "ranked": write_jsonl(tmp_path / "ranked.jsonl", toy_ranking_dataset().to_list()),
        "pairs": write_jsonl(tmp_path / "pairs.jsonl", toy_ranking_dataset(with_rewards=False).to_list()[:2]),
        "prompts": write_jsonl(tmp_path / "prompts.jsonl", toy_prompt_dataset().to_list()[:3]),
        "human": write_jsonl(tmp_path / "human.jsonl", toy_preference_dataset().to_list()),
    }


def usage_error(capsys, argv) -> str:
    """Run `trl-won argv`, expect argparse's exit code 2, return the error line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"trl-won {argv[0]}: error: "), err
    return err[-1]


def failed_run(capsys, argv) -> str:
    """Run `trl-won argv`, expect exit code 1 and one error line (no traceback), return it."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"trl-won {argv[0]}: error: "), err[-2000:]
    return line


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert "Exit codes" in out


@pytest.mark.parametrize("command", ["rrhf", "west-of-n", "label"])
def test_each_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"trl-won {command}" in out and "--config" in out
    assert "--dataset_name" in out and "--dataset_train_split" in out and "--datasets" in out


def test_one_name_per_concept(capsys):
    """TRL's names everywhere; the judge's flags are the same `--judge_*` set in label and west-of-n."""
    helps = {}
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = capsys.readouterr().out
    for command in ("label", "west-of-n"):
        for flag in ("--judge_model_name_or_path", "--judge_base_url", "--judge_template", "--judge_load_in_4bit"):
            assert flag in helps[command]
    assert "--judge_model_name_or_path" in helps["demo"] and "--policy_name_or_path" in helps["demo"]
    assert "--reward_model_name_or_path" in helps["demo"] and "--policy_name_or_path" in helps["west-of-n"]
    for old in ("--template ", "--dataset_split ", "--num_samples", "--max_prompts", "--api_key_env", "--policy "):
        assert all(old not in text for text in helps.values()), old
    # label has no trained model, so no ModelConfig flags; rrhf and west-of-n (the student) keep them.
    assert "--use_peft" not in helps["label"] and "--lora_r" not in helps["label"]
    assert "--use_peft" in helps["rrhf"] and "--use_peft" in helps["west-of-n"]


def test_help_and_dispatch_do_not_import_torch():
    code = (
        "import sys\nimport trl_won\nfrom trl_won.cli.main import main\n"
        "assert main(['--help']) == 0 and main(['rlhf']) == 2\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from trl_won import RRHFTrainer, TrlWonError, label_preferences  # the public API still imports\n"
        "assert 'torch' in sys.modules and all(hasattr(trl_won, name) for name in trl_won.__all__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def test_module_entry_point_runs():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "trl_won", "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "west-of-n" in result.stdout


def test_unknown_command_and_bad_arguments_are_named(capsys):
    assert main(["rlhf"]) == 2
    assert "unknown command 'rlhf'; expected one of rrhf, west-of-n, label, demo" in capsys.readouterr().err
    assert "`max_completions` must be at least 2" in usage_error(capsys, ["rrhf", "--max_completions", "1"])
    with pytest.raises(SystemExit):
        main(["west-of-n", "--n", "many"])
    assert "argument --n: invalid int value: 'many'" in capsys.readouterr().err
    assert "--no_such_flag" in usage_error(capsys, ["label", "--no_such_flag", "1"])


def test_demo_help_and_size_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "trl-won demo --quick" in out and "--sizes" in out
    assert "--sizes: unknown size(s) ['wonn']" in usage_error(capsys, ["demo", "--sizes", '{"wonn": 3}'])
    assert "--sizes: 'won_n' must be a number" in usage_error(capsys, ["demo", "--sizes", '{"won_n": "many"}'])
    line = usage_error(capsys, ["demo", "--sizes", '{"tie_embeddings": 1}'])
    assert "--sizes: 'tie_embeddings' must be true or false" in line


# No silent toy data: every missing input is an error naming the flag (before anything is loaded or trained).
@pytest.mark.parametrize(
    "argv, message",
    [
        (["rrhf", "--dataset_name", "{ranked}"], "--model_name_or_path is required"),
        (["rrhf", "--model_name_or_path", "{policy}"], "Either `datasets` or `dataset_name` must be provided"),
        (["label", "--dataset_name", "{pairs}"], "--judge_model_name_or_path is required"),
        (["label", "--judge_model_name_or_path", "{policy}"], "Either `datasets` or `dataset_name` must be provided"),
        (["west-of-n", "--dataset_name", "{prompts}"], "--policy_name_or_path is required"),
        (["west-of-n", "--policy_name_or_path", "{policy}"], "Either `datasets` or `dataset_name` must be provided"),
        (
            ["west-of-n", "--policy_name_or_path", "{policy}", "--dataset_name", "{prompts}"],
            "A base preference model is required: --reward_model_name_or_path",
        ),
        (
            ["west-of-n", "--policy_name_or_path", "{policy}", "--reward_model_name_or_path", "{reward_model}"]
            + ["--dataset_name", "{prompts}", "--train_student", "--model_name_or_path", "{reward_model}"],
            "--human_dataset_name is required",
        ),
        (
            ["west-of-n", "--policy_name_or_path", "{policy}", "--reward_model_name_or_path", "{reward_model}"]
            + ["--dataset_name", "{prompts}", "--train_student", "--human_dataset_name", "{human}"],
            "--model_name_or_path is required: the student reward model to train",
        ),
    ],
)
def test_missing_inputs_are_errors(tiny_paths, data, capsys, argv, message):
    names = {**data, "policy": tiny_paths.policy, "reward_model": tiny_paths.reward_model}
    assert message in usage_error(capsys, [a.format(**names) for a in argv])


# Flags that would do nothing are rejected, not ignored.
@pytest.mark.parametrize(
    "argv, message",
    [
        (["label", "--use_peft"], "--use_peft"),
        (["label", "--lora_r", "8"], "--lora_r"),
        (["label", "--dataset_split", "train"], "--dataset_split"),
        (["label", "--template", "helpfulness"], "--template"),
        (["label", "--judge_model_name_or_path", "m", "--dataset_name", "{pairs}", "--streaming"], "--streaming"),
        (
            ["label", "--judge_model_name_or_path", "m", "--judge_base_url", "http://127.0.0.1:9/v1"]
            + ["--dataset_name", "{pairs}", "--judge_batch_size", "4"],
            "--judge_batch_size is for a local judge",
        ),
        (
            ["label", "--judge_model_name_or_path", "{policy}", "--dataset_name", "{pairs}"]
            + ["--judge_max_concurrency", "4"],
            "--judge_max_concurrency is for a served judge",
        ),
        (
            ["west-of-n", "--policy_name_or_path", "{policy}", "--dataset_name", "{prompts}"]
            + ["--reward_model_name_or_path", "{reward_model}", "--human_dataset_name", "{human}"],
            "--human_dataset_name is for the student: add --train_student",
        ),
        (
            ["west-of-n", "--policy_name_or_path", "{policy}", "--dataset_name", "{prompts}"]
            + ["--reward_model_name_or_path", "{reward_model}", "--load_in_4bit"],
            "--load_in_4bit configures the student (TRL's ModelConfig): add --train_student",
        ),
        (["west-of-n", "--ignore_bias_buffers"], "--ignore_bias_buffers"),
        (["demo", "--judge", "x"], "--judge"),
    ],
)
def test_flags_that_do_nothing_are_rejected(tiny_paths, data, capsys, argv, message):
    names = {**data, "policy": tiny_paths.policy, "reward_model": tiny_paths.reward_model}
    assert message in usage_error(capsys, [a.format(**names) for a in argv])


def test_wrong_paths_and_splits_are_one_line_errors(tiny_paths, data, tmp_path, capsys):
    missing_model = str(tmp_path / "no-model")
    line = usage_error(capsys, ["rrhf", "--model_name_or_path", missing_model, "--dataset_name", data["ranked"]])
    assert f"--model_name_or_path '{missing_model}': no such directory" in line
    missing_data = str(tmp_path / "nope.jsonl")
    line = failed_run(capsys, ["rrhf", "--model_name_or_path", tiny_paths.policy, "--dataset_name", missing_data])
    assert f"Dataset '{missing_data}': no such file or directory" in line
    argv = ["rrhf", "--model_name_or_path", tiny_paths.policy, "--dataset_name", data["ranked"]]
    line = usage_error(capsys, argv + ["--dataset_train_split", "training"])
    assert "has no split 'training' (it has ['train']); set --dataset_train_split to one of them" in line
    line = usage_error(capsys, argv + ["--eval_strategy", "steps"])
    assert "has no split 'test' (it has ['train']); set --dataset_test_split to one of them" in line


def test_missing_column_is_a_one_line_error(tiny_paths, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `label` writes to ./rlaif-labels by default: never into the repository
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "Q?", "completion_a": "a", "completion_b": "b"}])
    line = failed_run(capsys, ["label", "--judge_model_name_or_path", tiny_paths.policy, "--dataset_name", bad])
    assert "has no column 'prompt'" in line and "question" in line


def test_a_judge_that_never_answers_fails_the_run(tiny_paths, data, tmp_path, capsys):
    """A served judge whose answers carry no log-probabilities labels nothing: exit 1, one line, nothing written."""
    with JudgeServer(lambda body, attempt, headers: Reply(body=chat_body("I cannot tell."))) as server:
        argv = ["label", "--judge_model_name_or_path", "judge", "--judge_base_url", server.base_url]
        argv += ["--dataset_name", data["pairs"], "--output_dir", str(tmp_path / "labels")]
        line = failed_run(capsys, argv)
    assert f"The judge server at {server.base_url} answered without log-probabilities" in line
    assert not (tmp_path / "labels" / "preferences.jsonl").exists()


def test_west_of_n_with_a_judge_that_never_answers_fails(tiny_paths, data, tmp_path, capsys):
    with JudgeServer(lambda body, attempt, headers: Reply(body=chat_body("I cannot tell."))) as server:
        argv = ["west-of-n", "--policy_name_or_path", tiny_paths.policy, "--dataset_name", data["prompts"]]
        argv += ["--judge_model_name_or_path", "judge", "--judge_base_url", server.base_url, "--n", "2"]
        line = failed_run(capsys, argv + ["--max_new_tokens", "4", "--pairs_dir", str(tmp_path / "pairs")])
    assert f"The judge server at {server.base_url} answered without log-probabilities" in line


def test_west_of_n_resume_mismatch_and_empty_result_fail(tiny_paths, data, tmp_path, capsys):
    argv = ["west-of-n", "--policy_name_or_path", tiny_paths.policy, "--reward_model_name_or_path"]
    argv += [tiny_paths.reward_model, "--dataset_name", data["prompts"], "--max_new_tokens", "4"]
    argv += ["--pairs_dir", str(tmp_path / "pairs")]
    assert main(argv + ["--n", "3"]) == 0
    capsys.readouterr()
    line = failed_run(capsys, argv + ["--n", "4"])
    assert "holds West-of-N results made with different arguments" in line and "n: saved 3, now 4" in line
    argv[-1] = str(tmp_path / "pairs-filtered")
    line = failed_run(capsys, argv + ["--n", "3", "--confidence_threshold", "0.999999"])
    assert "0 West-of-N pairs produced: 3 prompts, 3 pairs formed, 3 removed by the confidence filter" in line


def test_bugs_keep_their_traceback():
    from trl_won.cli.rrhf import make_parser

    def buggy(*args):
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        run_script(make_parser(prog="trl-won rrhf"), buggy, ["--model_name_or_path", "x"])


def test_a_finished_command_tears_the_process_group_down_and_a_failed_one_leaves_it(tmp_path):
    # Under `accelerate launch`, a process group left to interpreter shutdown can abort a rank that finished its work.
    import torch.distributed as dist

    from trl_won.cli.rrhf import make_parser
    from trl_won.errors import TrlWonError

    def failing(*args):
        raise TrlWonError("no pairs")

    argv = ["--model_name_or_path", "x"]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert run_script(make_parser(prog="trl-won rrhf"), failing, argv) == 1
        assert dist.is_initialized()  # no barrier after a failure: the other ranks may never reach it
        assert run_script(make_parser(prog="trl-won rrhf"), lambda *args: None, argv) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_rrhf_command_trains_and_saves(tiny_paths, data, tmp_path):
    output_dir = tmp_path / "rrhf"
    argv = ["rrhf", "--model_name_or_path", tiny_paths.policy, "--dataset_name", data["ranked"], "--max_steps", "1"]
    argv += ["--output_dir", str(output_dir), "--report_to", "none", "--per_device_train_batch_size", "2"]
    assert main(argv) == 0
    assert (output_dir / "model.safetensors").exists() and "RRHF" in (output_dir / "README.md").read_text()


def test_rrhf_ignore_bias_buffers_is_applied(tiny_paths, data, tmp_path):
    import torch

    from trl_won.cli import rrhf

    argv = ["--model_name_or_path", tiny_paths.policy, "--dataset_name", data["ranked"], "--max_steps", "1"]
    argv += ["--output_dir", str(tmp_path / "out"), "--report_to", "none", "--ignore_bias_buffers"]
    trainer = rrhf.main(*rrhf.make_parser().parse_args_and_config(argv))
    bool_buffers = [name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool]
    assert trainer.model._ddp_params_and_buffers_to_ignore == bool_buffers


def test_config_file_with_a_datasets_mixture(tiny_paths, data, tmp_path):
    """TRL's `datasets:` mixture from a YAML config: two local files, the fractions respected."""
    from trl_won.cli import rrhf

    second = write_jsonl(tmp_path / "second.jsonl", toy_ranking_dataset().to_list()[:4])
    config = tmp_path / "rrhf.yaml"
    output_dir = tmp_path / "from-yaml"
    config.write_text(
        f"model_name_or_path: {tiny_paths.policy}\nmax_steps: 1\noutput_dir: {output_dir}\nreport_to: none\n"
        f"datasets:\n  - path: {data['ranked']}\n    fraction: 0.5\n  - path: {second}\n    fraction: 0.5\n"
    )
    assert main(["rrhf", "--config", str(config)]) == 0
    assert (output_dir / "model.safetensors").exists()
    trainer = rrhf.main(*rrhf.make_parser().parse_args_and_config(["--config", str(config)]))
    assert len(trainer.train_dataset) == 8  # 4 rows of each: the first file is cut to the second's size


def test_west_of_n_command_generates_and_trains_the_student(tiny_paths, data, tmp_path):
    argv = ["west-of-n", "--policy_name_or_path", tiny_paths.policy, "--reward_model_name_or_path"]
    argv += [tiny_paths.reward_model, "--dataset_name", data["prompts"], "--n", "3", "--max_new_tokens", "6"]
    argv += ["--pairs_dir", str(tmp_path / "pairs"), "--train_student", "--human_dataset_name", data["human"]]
    argv += ["--model_name_or_path", tiny_paths.reward_model, "--output_dir", str(tmp_path / "student")]
    assert main(argv + ["--max_steps", "1", "--report_to", "none"]) == 0
    assert (tmp_path / "pairs").is_dir()
    assert (tmp_path / "student" / "model.safetensors").exists()


def test_label_command_writes_labels(tiny_paths, tmp_path):
    rows = [{"prompt": "Q?", "completion_a": f" answer {i}.", "completion_b": " no."} for i in range(3)]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    output_dir = tmp_path / "labels"
    argv = ["label", "--judge_model_name_or_path", tiny_paths.policy, "--dataset_name", pairs]
    assert main(argv + ["--output_dir", str(output_dir), "--judge_template", "summarization"]) == 0
    rows = [json.loads(line) for line in (output_dir / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(0.0 <= row["soft_label"] <= 1.0 for row in rows)


# A failed run leaves nothing behind in the user's directory (issue 17): the arguments and the dataset are checked
# before anything is written, and `label` removes the store it created if the run fails before its first label.
def never_answers(body, attempt, headers):
    return Reply(body=chat_body("I cannot tell."))


@pytest.mark.parametrize(
    "argv, code",
    [
        (["label", "--judge_model_name_or_path", "{policy}", "--dataset_name", "{bad}"], 1),
        (["label", "--judge_model_name_or_path", "{policy}", "--dataset_name", "{bad}", "--output_dir", "a/b"], 1),
        (
            ["label", "--judge_model_name_or_path", "judge", "--judge_base_url", "{url}", "--dataset_name", "{pairs}"],
            1,
        ),
        (
            ["label", "--judge_model_name_or_path", "judge", "--judge_base_url", "{url}", "--dataset_name", "{pairs}"]
            + ["--output_dir", "runs/labels"],
            1,
        ),
        (
            ["label", "--judge_model_name_or_path", "{policy}", "--dataset_name", "{pairs}"]
            + ["--judge_max_concurrency", "4"],
            2,
        ),
        (["label", "--judge_model_name_or_path", "./no-judge", "--dataset_name", "{pairs}"], 2),
        (["rrhf", "--model_name_or_path", "{policy}", "--dataset_name", "{bad}", "--report_to", "none"], 1),
        (
            ["west-of-n", "--policy_name_or_path", "{policy}", "--reward_model_name_or_path", "{reward_model}"]
            + ["--dataset_name", "{bad}"],
            1,
        ),
    ],
)
def test_a_failed_run_leaves_nothing_in_the_working_directory(tiny_paths, tmp_path, capsys, monkeypatch, argv, code):
    data = tmp_path / "data"
    data.mkdir()
    bad = write_jsonl(data / "bad.jsonl", [{"question": "Q?", "completion_a": "a", "completion_b": "b"}])
    pairs = write_jsonl(data / "pairs.jsonl", [{"prompt": "Q?", "completion_a": " a.", "completion_b": " b."}])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with JudgeServer(never_answers) as server:
        names = {"policy": tiny_paths.policy, "reward_model": tiny_paths.reward_model, "url": server.base_url}
        argv = [a.format(bad=bad, pairs=pairs, **names) for a in argv]
        if code == 1:
            failed_run(capsys, argv)
        else:
            usage_error(capsys, argv)
    assert sorted(p.name for p in work.iterdir()) == []


def test_a_failed_label_run_keeps_the_stores_labels_and_a_store_that_was_there(tiny_paths, data, tmp_path, capsys):
    from trl_won.rlaif import LabelStore

    # A store that existed before the run (even empty) is never removed.
    existing = LabelStore(tmp_path / "existing" / "labels.sqlite")
    existing.close()
    with JudgeServer(never_answers) as server:
        argv = ["label", "--judge_model_name_or_path", "judge", "--judge_base_url", server.base_url]
        failed_run(capsys, argv + ["--dataset_name", data["pairs"], "--output_dir", str(tmp_path / "existing")])
    assert existing.path.exists()
    # A run that stored labels and then failed (every pair dropped by --min_confidence) keeps them.
    argv = ["label", "--judge_model_name_or_path", tiny_paths.policy, "--dataset_name", data["pairs"]]
    line = failed_run(capsys, argv + ["--min_confidence", "1.0", "--output_dir", str(tmp_path / "labeled")])
    assert "0 labeled pairs produced" in line
    rows = [json.loads(line) for line in Path(data["pairs"]).read_text().splitlines()]
    pairs = sum(len(row["completions"]) * (len(row["completions"]) - 1) // 2 for row in rows)  # every pair of a row
    assert LabelStore(tmp_path / "labeled" / "labels.sqlite").count() == pairs  # paid for, and kept


# Every missing required argument is named in one error, not one per try (issue 17).
def test_every_missing_required_argument_is_named_at_once(capsys, data):
    line = usage_error(capsys, ["label"])
    assert "2 required arguments are missing: (1) --judge_model_name_or_path is required: the judge" in line
    assert "(2) Either `datasets` or `dataset_name` must be provided: --dataset_name" in line
    line = usage_error(capsys, ["label", "--dataset_name", data["pairs"]])
    assert "--judge_model_name_or_path is required" in line and "missing" not in line and "(1)" not in line
    line = usage_error(capsys, ["label", "--judge_base_url", "http://127.0.0.1:9/v1"])
    assert "(1) --judge_base_url needs --judge_model_name_or_path: the model name the server knows." in line
    assert "(2) Either `datasets` or `dataset_name` must be provided" in line
    line = usage_error(capsys, ["rrhf"])
    assert "2 required arguments are missing: (1) --model_name_or_path is required" in line
    assert "(2) Either `datasets` or `dataset_name` must be provided" in line
    line = usage_error(capsys, ["west-of-n", "--train_student"])
    assert "5 required arguments are missing: (1) --policy_name_or_path is required" in line
    assert "(2) Either `datasets`" in line and "(3) A base preference model is required" in line
    assert "(4) --human_dataset_name is required" in line and "(5) --model_name_or_path is required" in line
    line = usage_error(
        capsys, ["west-of-n", "--policy_name_or_path", "p", "--judge_base_url", "http://127.0.0.1:9/v1"]
    )
    assert "(2) A base preference model is required" in line and "(3) --judge_base_url needs" in line


# TRL's mixture flags that label and west-of-n cannot honour are left out of their help and rejected by name.
@pytest.mark.parametrize("command", ["label", "west-of-n"])
def test_unsupported_mixture_flags_are_not_in_the_help_and_are_rejected(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "--streaming" not in out and "--test_split_size" not in out and "--datasets" in out
    line = usage_error(capsys, [command, "--streaming"])
    assert f"--streaming is not supported by trl-won {command}: it reads the whole split into memory" in line
    line = usage_error(capsys, [command, "--test_split_size", "0.1"])
    assert f"--test_split_size is not supported by trl-won {command}: it uses one split" in line


def test_rrhf_keeps_the_mixture_flags_it_supports(capsys):
    with pytest.raises(SystemExit):
        main(["rrhf", "--help"])
    out = capsys.readouterr().out
    assert "--streaming" in out and "--test_split_size" in out


def test_a_commands_help_does_not_import_its_trainer():
    """`trl-won <command> --help` builds the parser from the config dataclasses only: no trainer, generator, judge or
    `datasets` (rrhf and west-of-n still import TRL's training arguments, hence transformers and torch)."""
    code = (
        "import sys\nfrom trl_won.cli.main import main\n"
        "for command in ('label', 'demo'):\n"
        "    try:\n        main([command, '--help'])\n    except SystemExit as exit:\n        assert exit.code == 0\n"
        "light = [m for m in ('torch', 'transformers', 'datasets', 'peft') if m in sys.modules]\n"
        "assert not light, light\n"
        "for command in ('rrhf', 'west-of-n'):\n"
        "    try:\n        main([command, '--help'])\n    except SystemExit as exit:\n        assert exit.code == 0\n"
        "heavy = ('datasets', 'pandas', 'trl_won.rrhf.trainer', 'trl_won.west_of_n.generator', 'trl_won.generation',\n"
        "         'trl_won.rlaif', 'trl.trainer.reward_trainer', 'trl.trainer.grpo_trainer', 'transformers.trainer')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

"""Every example command runs as printed, in order: the examples in each `trl-won` command's `--help`, the top-level
help's, the ones in the `examples/` scripts' docstrings, and `docs/cli.md`'s YAML config.

Each source runs in its own empty directory holding the data files its commands name (`ranked.jsonl`,
`pairs.jsonl`, ...), in the order printed, so that commands that collide (a shared `--pairs_dir` with other arguments,
an output folder another command needs) fail here. The only substitutions: hub ids become local tiny models or
datasets (no network), `http://localhost:8000/v1` becomes a local OpenAI-compatible test server, and `python`/
`examples/` become this interpreter and this checkout; the tiny policy ends its answers in a few tokens.
`trl-won demo` examples are parsed, not run: their runs take minutes (the demo's `--quick` run is
tests/test_demo_pipeline.py). Multi-process lines (`accelerate launch`) are comments in the help; multi-process runs
are tested in tests/test_*_distributed.py.
"""

import importlib
import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict
from rlaif_server import JudgeServer, Reply, chat_body, sections
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_won.cli.main import COMMANDS, EXAMPLES, main
from trl_won.tiny import toy_preference_dataset, toy_prompt_dataset, toy_ranking_dataset


ROOT = Path(__file__).parents[1]
LOCAL_URL = "http://localhost:8000/v1"
HUB_ID = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def commands_in(text: str, starts: tuple[str, ...]) -> list[str]:
    """The commands in `text` that start with one of `starts` (after indentation), continuation lines joined."""
    commands, current = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if current is not None:
            current += " " + line.rstrip("\\").strip()
        elif line.startswith(starts):
            current = line.rstrip("\\").strip()
        if current is not None and not line.endswith("\\"):
            commands.append(current)
            current = None
    return commands


def help_sources() -> dict[str, list[str]]:
    sources = {"trl-won --help": [c for c in EXAMPLES if not c.startswith("trl-won demo")]}
    for name, (module, _) in COMMANDS.items():
        epilog = importlib.import_module(f"trl_won.cli.{module}").EXAMPLES
        sources[f"trl-won {name} --help"] = commands_in(epilog, ("trl-won ",))
    return sources


def example_sources() -> dict[str, list[str]]:
    sources = {}
    for script in sorted((ROOT / "examples").glob("*.py")):
        docstring = script.read_text().split('"""')[1]
        sources[f"examples/{script.name}"] = commands_in(docstring, ("python examples/",))
    return sources


@pytest.fixture(scope="module")
def world(tiny_paths, tmp_path_factory):
    """Substitutions for hub ids, and the data files the examples name (written into each run's directory)."""
    hub = tmp_path_factory.mktemp("hub")
    # The tiny policy, ending its answers in a few tokens as an instruct model does (a random one never says EOS and
    # would write the full 256 tokens of --max_new_tokens' default): every fourth token id ends generation.
    policy = AutoModelForCausalLM.from_pretrained(tiny_paths.policy)
    policy.generation_config.eos_token_id = list(range(0, policy.config.vocab_size, 4))
    policy.save_pretrained(hub / "policy")
    AutoTokenizer.from_pretrained(tiny_paths.policy).save_pretrained(hub / "policy")
    pairs = toy_preference_dataset()
    DatasetDict({"train": pairs, "test": pairs.select(range(4))}).save_to_disk(str(hub / "ultrafeedback"))
    DatasetDict({"train": toy_prompt_dataset()}).save_to_disk(str(hub / "tldr"))  # prompt-only, one round of 8
    models = {
        "Qwen/Qwen2.5-0.5B-Instruct": str(hub / "policy"),
        "Qwen/Qwen2.5-1.5B-Instruct": str(hub / "policy"),
        "Qwen/Qwen2.5-7B-Instruct": str(hub / "policy"),
        "Qwen/Qwen2.5-0.5B": str(hub / "policy"),
        "my-org/base-rm": tiny_paths.reward_model,
        "Skywork/Skywork-Reward-V2-Qwen3-0.6B": tiny_paths.reward_model,
        "trl-lib/ultrafeedback_binarized": str(hub / "ultrafeedback"),
        "trl-lib/tldr": str(hub / "tldr"),
    }
    files = {
        "ranked.jsonl": toy_ranking_dataset(),
        "completions.jsonl": toy_ranking_dataset(with_rewards=False),
        "pairs.jsonl": toy_ranking_dataset(with_rewards=False).select(range(3)),
        "prompts.jsonl": toy_prompt_dataset().select(range(3)),
        "human-pairs.jsonl": toy_preference_dataset(),
    }
    yaml_block = re.search(r"```yaml\n# rrhf.yaml\n(.*?)```", (ROOT / "docs" / "cli.md").read_text(), re.S).group(1)
    return models, files, yaml_block


def prepare(directory: Path, world, judge_url: str) -> dict:
    models, files, yaml_block = world
    for name, dataset in files.items():
        assert isinstance(dataset, Dataset)
        (directory / name).write_text("".join(json.dumps(row) + "\n" for row in dataset.to_list()))
    for hub_id, local in models.items():
        yaml_block = yaml_block.replace(hub_id, local)
    (directory / "rrhf.yaml").write_text(yaml_block)
    # The user's reward module that `--reward_funcs my_rewards.length_reward` names (imported from the working
    # directory, as TRL's grpo script imports dotted names).
    (directory / "my_rewards.py").write_text(
        "def length_reward(prompts, completions, **kwargs):\n    return [float(len(c)) for c in completions]\n"
    )
    return {**models, LOCAL_URL: judge_url}


def substitute(command: str, substitutions: dict, directory: Path) -> list[str]:
    argv = [substitutions.get(token, token) for token in shlex.split(command)]
    unknown = [t for t in argv if HUB_ID.match(t) and not any((base / t).exists() for base in (directory, ROOT))]
    assert not unknown, f"{command!r} names hub ids {unknown}: add a local substitute in tests/test_cli_examples.py"
    return argv


def check_outputs(argv: list[str], directory: Path):
    """What the command promised to write is there."""

    def value(flag):
        return argv[argv.index(flag) + 1] if flag in argv else None

    outputs = [value("--output_dir")] if "west-of-n" not in argv or "--train_student" in argv else []
    if "west-of-n" in argv:
        outputs.append(value("--pairs_dir"))
    if value("--config") == "rrhf.yaml":
        outputs.append(re.search(r"output_dir: (\S+)", (directory / "rrhf.yaml").read_text()).group(1))
    for output in filter(None, outputs):
        assert (directory / output).is_dir() and any((directory / output).iterdir()), (argv, output)


def judge_reply(body, attempt, headers):
    """The served judge prefers the longer response (a tie goes to the first)."""
    first, second = sections(body)
    better = "1" if len(first) >= len(second) else "2"
    return Reply(body=chat_body(better, top={better: 0.8, "2" if better == "1" else "1": 0.2}))


def run_in_order(commands, directory, world, run_one):
    assert commands, "no example found"
    with JudgeServer(judge_reply) as server:
        substitutions = prepare(directory, world, server.base_url)
        for command in commands:
            argv = substitute(command, substitutions, directory)
            if run_one(command, argv):
                check_outputs(argv, directory)


@pytest.mark.parametrize("source", list(help_sources()))
def test_help_examples_run_as_printed(source, world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def run_one(command, argv):
        assert argv[0] == "trl-won", command
        if argv[1] == "demo":  # parsed only (see the module docstring)
            from trl_won.cli.demo import make_parser

            make_parser().parse_args_and_config(argv[2:], fail_with_unknown_args=True)
            return False
        code = main(argv[1:])
        assert code == 0, f"{command!r} exited {code}: {capsys.readouterr().err[-3000:]}"
        return True

    run_in_order(help_sources()[source], tmp_path, world, run_one)


@pytest.mark.parametrize("source", list(example_sources()))
def test_example_scripts_run_as_printed(source, world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def run_one(command, argv):  # in this process (`python script args` is runpy with that sys.argv)
        assert argv[:2] == ["python", source], command
        monkeypatch.setattr(sys, "argv", [str(ROOT / source), *argv[2:]])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(ROOT / source), run_name="__main__")
        code = exit_info.value.code
        assert code in (0, None), f"{command!r} exited {code}: {capsys.readouterr().err[-3000:]}"
        return True

    run_in_order(example_sources()[source], tmp_path, world, run_one)


def test_every_source_has_examples():
    """The extraction finds what is printed (so that a reformatted help cannot silently test nothing)."""
    counts = {source: len(commands) for source, commands in {**help_sources(), **example_sources()}.items()}
    assert counts == {
        "trl-won --help": 1,
        "trl-won rrhf --help": 5,
        "trl-won west-of-n --help": 3,
        "trl-won label --help": 3,
        "trl-won demo --help": 6,
        "examples/rlaif_label.py": 2,
        "examples/rrhf.py": 2,
        "examples/west_of_n.py": 1,
    }

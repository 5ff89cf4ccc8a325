"""`trl-won`: train with RRHF, generate West-of-N pairs, label preferences with an LLM judge, or run the demo.

Each subcommand is a `TrlParser` script, like TRL's own (`--config file.yaml`; TRL's flag names, `ModelConfig` flags
for LoRA and 4/8-bit where a model is trained). For several GPUs run it under accelerate: `accelerate launch -m
trl_won rrhf ...`.

Exit codes: 0 done; 1 the run failed at its job (a judge that never answered, nothing produced, a missing column or
file, a resume mismatch), with one line `trl-won <command>: error: ...` on stderr; 2 a wrong or missing argument
(argparse's usage line and the error). Anything else is a bug and keeps its traceback.
"""

import importlib
import os
import sys


# name -> (module under trl_won.cli, one-line description). Nothing heavy is imported until a command runs.
COMMANDS = {
    "rrhf": ("rrhf", "Train a causal LM with RRHF on ranked, scored completions."),
    "west-of-n": ("west_of_n", "Generate West-of-N preference pairs from prompts; optionally train the student RM."),
    "label": ("label", "Label preference pairs with an LLM judge (RLAIF), local or OpenAI-compatible."),
    "demo": ("demo", "Run all three methods end to end on a synthetic world (CPU, no network)."),
}

EXAMPLES = [
    "trl-won demo --quick --output_dir demo-quick",
    "trl-won rrhf --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name ranked.jsonl --output_dir Qwen-RRHF",
]


def top_level_help() -> str:
    lines = ["usage: trl-won <command> [options]   (trl-won <command> --help for a command's options)", ""]
    lines += [__doc__.strip(), "", "commands:"]
    lines += [f"  {name:<11} {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "examples:"] + [f"  {example}" for example in EXAMPLES]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(top_level_help())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"trl-won: error: unknown command {name!r}; expected one of {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    return run(name, rest)


def run(name: str, argv: list[str], prog: str | None = None, defaults: dict | None = None) -> int:
    """Parse `argv` for the command `name` and run it: 0 when done, 1 when it failed at its job (one line on stderr),
    2 (argparse's `SystemExit`) for a wrong or missing argument. `prog` and `defaults` let an example script reuse it.
    """
    prog = prog or f"trl-won {name}"
    if argv in (["-h"], ["--help"]) and not has_args_file():
        print_help(name, prog, defaults)
    parser = build_parser(name, prog, defaults)
    return run_script(parser, importlib.import_module(f"trl_won.cli.{COMMANDS[name][0]}").main, argv)


def build_parser(name: str, prog: str, defaults: dict | None = None):
    """The `TrlParser` of the command `name` (this imports its config dataclasses: for rrhf and west-of-n, TRL's
    training arguments, hence torch)."""
    module = importlib.import_module(f"trl_won.cli.{COMMANDS[name][0]}")
    parser = module.make_parser(prog=prog)
    parser.usage = f"{prog} [--config file.yaml] [options]   (--help lists the options, with examples)"
    if defaults:
        parser.set_defaults(**defaults)
    return parser


def has_args_file() -> bool:
    """Whether `HfArgumentParser` would read arguments from a `.args` file beside the script (`sys.argv[0]` with the
    suffix `.args`) before the command line's: its arguments can change what `--help` does, so the parser answers."""
    return bool(sys.argv and sys.argv[0]) and os.path.exists(os.path.splitext(sys.argv[0])[0] + ".args")


def print_help(name: str, prog: str, defaults: dict | None = None) -> None:
    """Print the help of the command `name` and exit 0, as argparse's `--help` does, from the help cache
    (trl_won/cli/help_cache.py) when it holds this help, so that no config dataclass (and no torch) is imported.

    Only `<command> --help` (or `-h`) alone is answered here: with other arguments (`--config`, which sets defaults,
    or a value argparse would reject first), or a `.args` file (`has_args_file`), the parser answers as usual."""
    from .help_cache import cached_help

    text = cached_help(name, prog, defaults, lambda: build_parser(name, prog, defaults).format_help())
    try:
        sys.stdout.write(text)
    except (AttributeError, OSError):  # no stdout, or a closed pipe: as argparse's print_help
        pass
    raise SystemExit(0)


def run_script(parser, main_function, argv: list[str] | None = None) -> int:
    """Parse `argv` with the `TrlParser` `parser` and call `main_function(*parsed)`, reporting a
    [`~trl_won.errors.TrlWonError`] or `OSError` as one line `{parser.prog}: error: ...` (exit 1, or 2 for a
    [`~trl_won.errors.UsageError`], with the usage line) instead of a traceback. Anything else propagates."""
    from ..errors import TrlWonError, UsageError

    try:
        parsed = parser.parse_args_and_config(argv, fail_with_unknown_args=True)
    except ValueError as error:  # unknown arguments, or a config dataclass rejecting a value
        parser.error(str(error))
    try:
        main_function(*parsed)
    except UsageError as error:
        parser.error(str(error))  # exits 2
    except (TrlWonError, OSError) as error:  # OSError: a missing file or model, an unreachable server, a full disk
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return getattr(error, "exit_code", 1)
    end_distributed()
    return 0


def end_distributed() -> None:
    """Under `accelerate launch`, wait for every process and tear the process group down before the interpreter
    exits: left to interpreter shutdown, gloo's threads can abort a process that finished its work ("terminate called
    without an active exception"), and the launcher then reports the whole run as failed."""
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())

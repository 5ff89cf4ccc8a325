"""`trl-won`: train with RRHF, generate West-of-N pairs, label preferences with an LLM judge, or run the demo.

Each subcommand is a `TrlParser` script (the same `ModelConfig` flags for LoRA and 4/8-bit as TRL's scripts, and
`--config file.yaml`). For several GPUs run it under accelerate: `accelerate launch -m trl_won rrhf ...`.
"""

import importlib
import sys


# name -> (module under trl_won.cli, one-line description)
COMMANDS = {
    "rrhf": ("rrhf", "Train a causal LM with RRHF on ranked, scored completions."),
    "west-of-n": ("west_of_n", "Generate West-of-N preference pairs from prompts; optionally train the student RM."),
    "label": ("label", "Label preference pairs with an LLM judge (RLAIF), local or OpenAI-compatible."),
    "demo": ("demo", "Run all three methods end to end on a synthetic world (CPU, no network)."),
}


def top_level_help() -> str:
    lines = ["usage: trl-won <command> [options]   (trl-won <command> --help for a command's options)", ""]
    lines += [__doc__.strip(), "", "commands:"]
    lines += [f"  {name:<11} {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "examples:", "  trl-won demo", "  trl-won rrhf --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct"]
    lines += ["  accelerate launch --num_processes 8 -m trl_won rrhf --config rrhf.yaml"]
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
    module = importlib.import_module(f"trl_won.cli.{COMMANDS[name][0]}")
    parser = module.make_parser(prog=f"trl-won {name}")
    parser.usage = f"trl-won {name} [--config file.yaml] [options]   (--help lists the options, with examples)"
    try:
        parsed = parser.parse_args_and_config(rest, fail_with_unknown_args=True)
    except ValueError as error:  # unknown arguments, or a config dataclass rejecting a value
        parser.error(str(error))
    module.main(*parsed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

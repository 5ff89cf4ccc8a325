"""`trl-won demo`: the three methods end to end on a synthetic world whose true reward is known (CPU, no network).

Builds a tokenizer, a tiny policy (SFT), noisy "human" labels and a tiny judge LM, then runs West-of-N, Best-of-N,
RRHF and RLAIF through the package's public API and measures everything against the oracle reward. Writes
`results.json`, `report.md` and `demo.png` to `--output_dir`. See docs/demo.md.
"""

import argparse
import json
import os
from dataclasses import dataclass, field, fields

from trl import TrlParser

from .common import check_model_path


EXAMPLES = """examples:
  # the default run: about 2.5 minutes on 2 quiet CPU cores, into ./trl-won-demo
  trl-won demo

  # the reduced run of the test suite (under a minute), another seed, elsewhere
  trl-won demo --quick --seed 1 --output_dir /tmp/demo

  # bigger: more West-of-N samples and more human pairs
  trl-won demo --sizes '{"won_n": 32, "human_pairs": 3000}' --output_dir demo-big

  # a study: the papers' trends over a sweep and seeds 0, 1, 2 (study.md, study.png, study.json); see docs/demo.md
  trl-won demo --study west-of-n --output_dir study-west-of-n
  trl-won demo --study rlaif --seeds 0 1 2 3 4 --output_dir study-rlaif

  # real models on a GPU (the world supplies prompts, oracle and labels; the models are fine-tuned on them)
  trl-won demo --policy_name_or_path Qwen/Qwen2.5-0.5B --reward_model_name_or_path Qwen/Qwen2.5-0.5B \\
      --judge_model_name_or_path Qwen/Qwen2.5-7B-Instruct --output_dir demo-real
"""


DEFAULT_OUTPUT_DIR = "trl-won-demo"


@dataclass
class DemoArguments:
    """Arguments of `trl-won demo`.

    Args:
        quick (`bool`, *optional*, defaults to `False`):
            The reduced size of the test suite (under a minute; numbers sane, not significant).
        seed (`int`, *optional*, defaults to `0`):
            Seed every random draw derives from: one seed, one exact run.
        output_dir (`str`, *optional*, defaults to `"trl-won-demo"`):
            Where models, `results.json`, `report.md` and `demo.png` go (a study's default: `trl-won-study-NAME`).
        policy_name_or_path (`str`, *optional*):
            A causal LM (path or hub id) to fine-tune on the world's demonstrations instead of the tiny one.
        reward_model_name_or_path (`str`, *optional*):
            A model (path or hub id) to start every reward model from, instead of the SFT policy.
        judge_model_name_or_path (`str`, *optional*):
            A causal LM judge (path or hub id) used as is (through its chat template if it has one), instead of the
            tiny judge trained here.
        sizes (`str`, *optional*):
            JSON object of size overrides, e.g. `'{"won_n": 32, "human_pairs": 3000}'`; the fields are those of
            `trl_won.demo.DemoSizes`.
        study (`str`, *optional*):
            Run a study instead of the demo: `"west-of-n"`, `"rlaif"` or `"rrhf"` (a sweep over several seeds; see
            docs/demo.md). With `--quick`, the reduced sweep of the test suite.
        seeds (`list[int]`, *optional*, defaults to `[0, 1, 2]`):
            Seeds a study runs (`--seed` is the demo's).
    """

    quick: bool = field(default=False, metadata={"help": "The reduced size of the test suite (under a minute)."})
    seed: int = field(default=0, metadata={"help": "Seed every random draw derives from."})
    output_dir: str = field(default=DEFAULT_OUTPUT_DIR, metadata={"help": "Where models and the report go."})
    policy_name_or_path: str | None = field(
        default=None, metadata={"help": "A causal LM to use instead of the tiny policy."}
    )
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "A model to start the reward models from."}
    )
    judge_model_name_or_path: str | None = field(default=None, metadata={"help": "A causal LM judge to use as is."})
    sizes: str | None = field(
        default=None, metadata={"help": "JSON size overrides, e.g. '{\"won_n\": 32}' (fields of DemoSizes)."}
    )

    study: str | None = field(
        default=None,
        metadata={"help": "Run a study instead of the demo.", "choices": ["west-of-n", "rlaif", "rrhf"]},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds a study runs."})

    def __post_init__(self):
        demo_sizes(self)  # a wrong --sizes fails while parsing, with the argument named


def demo_sizes(args: DemoArguments):
    """The [`DemoSizes`] the arguments ask for; a `ValueError` names an unknown or malformed override."""
    from ..demo import DemoSizes

    overrides = {}
    if args.sizes:
        try:
            overrides = json.loads(args.sizes)
        except json.JSONDecodeError as error:
            raise ValueError(f"--sizes must be a JSON object, got {args.sizes!r} ({error}).") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"--sizes must be a JSON object such as '{{\"won_n\": 32}}', got {args.sizes!r}.")
        known = {f.name for f in fields(DemoSizes)} - {"name", "seed", "label_noise", "judge_bias"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"--sizes: unknown size(s) {unknown}; expected some of {sorted(known)}.")
        defaults = DemoSizes.full()
        for name, value in overrides.items():
            wants_bool = isinstance(getattr(defaults, name), bool)
            if isinstance(value, bool) != wants_bool or not isinstance(value, (int, float)):
                expected = "true or false" if wants_bool else "a number"
                raise ValueError(f"--sizes: {name!r} must be {expected}, got {value!r}.")
    make = DemoSizes.quick if args.quick else DemoSizes.full
    return make(seed=args.seed, **overrides)


def main(args: DemoArguments) -> dict:
    """Run the demo, print what it shows and where the files are, and return the results."""
    from ..demo import DemoPipeline
    from ..demo.report import findings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.study is not None:
        return run_study(args)
    pipeline = DemoPipeline(
        demo_sizes(args),
        args.output_dir,
        policy=check_model_path(args.policy_name_or_path, "--policy_name_or_path"),
        reward_model=check_model_path(args.reward_model_name_or_path, "--reward_model_name_or_path"),
        judge=check_model_path(args.judge_model_name_or_path, "--judge_model_name_or_path"),
    )
    results = pipeline.run()
    print("\nWhat the numbers say:")
    for line in findings(results):
        print(f"- {line.replace('**', '')}")
    print()
    for name, path in pipeline.files.items():
        print(f"{name:>8}: {path}")
    print("\nThe papers' trends over sweeps and seeds: trl-won demo --study west-of-n | rlaif | rrhf (docs/demo.md).")
    return results


def run_study(args: DemoArguments) -> dict:
    """`--study NAME`: run the study and print where its files are."""
    from ..demo.studies import run_study as run
    from ..errors import UsageError

    given = [
        flag
        for flag, value in (
            ("--sizes", args.sizes),
            ("--policy_name_or_path", args.policy_name_or_path),
            ("--reward_model_name_or_path", args.reward_model_name_or_path),
            ("--judge_model_name_or_path", args.judge_model_name_or_path),
        )
        if value is not None
    ]
    if given:
        raise UsageError(f"--study runs its own sizes and tiny models; leave out {', '.join(given)}.")
    output_dir = f"trl-won-study-{args.study}" if args.output_dir == DEFAULT_OUTPUT_DIR else args.output_dir
    files = run(args.study, output_dir, args.seeds, quick=args.quick)
    print()
    for name, path in files.items():
        print(f"{name:>8}: {path}")
    return {name: str(path) for name, path in files.items()}


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser(
        (DemoArguments,),
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

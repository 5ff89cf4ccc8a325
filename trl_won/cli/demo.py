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
  # the default run: about 5 minutes on 2 CPU cores, into ./trl-won-demo
  trl-won demo

  # the reduced run of the test suite (under a minute), another seed, elsewhere
  trl-won demo --quick --seed 1 --output_dir /tmp/demo

  # bigger: more West-of-N samples and more human pairs
  trl-won demo --sizes '{"won_n": 32, "human_pairs": 3000}' --output_dir demo-big

  # real models on a GPU (the world supplies prompts, oracle and labels; the models are fine-tuned on them)
  trl-won demo --policy_name_or_path Qwen/Qwen2.5-0.5B --reward_model_name_or_path Qwen/Qwen2.5-0.5B \\
      --judge_model_name_or_path Qwen/Qwen2.5-7B-Instruct --output_dir demo-real
"""


@dataclass
class DemoArguments:
    """Arguments of `trl-won demo`.

    Args:
        quick (`bool`, *optional*, defaults to `False`):
            The reduced size of the test suite (under a minute; numbers sane, not significant).
        seed (`int`, *optional*, defaults to `0`):
            Seed every random draw derives from: one seed, one exact run.
        output_dir (`str`, *optional*, defaults to `"trl-won-demo"`):
            Where models, `results.json`, `report.md` and `demo.png` go.
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
    """

    quick: bool = field(default=False, metadata={"help": "The reduced size of the test suite (under a minute)."})
    seed: int = field(default=0, metadata={"help": "Seed every random draw derives from."})
    output_dir: str = field(default="trl-won-demo", metadata={"help": "Where models and the report go."})
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
    return results


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser(
        (DemoArguments,),
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

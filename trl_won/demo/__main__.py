"""Run the demo world's measurements: `python -m trl_won.demo [--quick] [--seed N] [--output-dir DIR]`.

A plain entry point for developing the world; the `trl-won demo` command wraps the same pipeline.
"""

import argparse
import json
import os

from .pipeline import DemoPipeline
from .sizes import DemoSizes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="The reduced size of the test suite (about a minute).")
    parser.add_argument("--seed", type=int, default=0, help="Seed every random draw derives from.")
    parser.add_argument("--output-dir", default="trl-won-demo", help="Where models and results.json go.")
    parser.add_argument("--policy", help="A causal LM (path or hub id) to use instead of the tiny policy.")
    parser.add_argument("--reward-model", help="A model (path or hub id) to start the reward models from.")
    parser.add_argument("--judge", help="A causal LM judge (path or hub id) to use as is instead of the tiny one.")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sizes = (DemoSizes.quick if args.quick else DemoSizes.full)(seed=args.seed)
    pipeline = DemoPipeline(
        sizes, args.output_dir, policy=args.policy, reward_model=args.reward_model, judge=args.judge
    )
    results = pipeline.run()
    shown = {k: v for k, v in results.items() if k != "sizes"}
    print(json.dumps(shown, indent=2))
    print(f"Results written to {os.path.join(args.output_dir, 'results.json')}")
    return results


if __name__ == "__main__":
    main()

"""Time `trl-won --help` and a mistyped subcommand against `trl --help`, measured in the same run.

Each round runs every command once, in turn, as a fresh process (so the machine's drift hits all of them alike);
the figures are medians over the rounds of the wall-clock time, with each command's ratio to `trl --help` taken round
by round. `import everything` is what `trl-won --help` cost before the package imported lazily: the interpreter
importing trl_won's trainers, judges and West-of-N (torch, transformers, TRL).

```bash
python benchmarks/cli_help.py              # 7 rounds
python benchmarks/cli_help.py --rounds 15
```
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def commands() -> dict[str, list[str]]:
    trl_won = [sys.executable, "-m", "trl_won"]
    return {
        "trl --help (baseline)": [shutil.which("trl") or "trl", "--help"],
        "trl-won --help": [*trl_won, "--help"],
        "trl-won rlhf (mistyped)": [*trl_won, "rlhf"],
        "import everything (before)": [sys.executable, "-c", "import trl_won.rrhf, trl_won.rlaif, trl_won.west_of_n"],
    }


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="Runs of each command (after one warm-up round).")
    args = parser.parse_args(argv)
    runs = commands()
    times = {name: [] for name in runs}
    for round_index in range(args.rounds + 1):
        for name, command in runs.items():
            elapsed = wall_time(command)
            if round_index:  # the first round warms the file cache
                times[name].append(elapsed)
    baseline = times["trl --help (baseline)"]
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.rounds} rounds; wall-clock seconds")
    print(f"{'command':<28}{'median':>9}{'min':>9}{'max':>9}{'ratio to trl --help (median)':>31}")
    for name, values in times.items():
        ratio = statistics.median(v / b for v, b in zip(values, baseline, strict=True))
        print(f"{name:<28}{statistics.median(values):>9.3f}{min(values):>9.3f}{max(values):>9.3f}{ratio:>31.2f}")


if __name__ == "__main__":
    main()

"""Time `trl-won --help`, a mistyped subcommand and each subcommand's `--help` against `trl --help` and
`trl-won --help`, measured in the same run.

Each round runs every command once, in turn, as a fresh process (so the machine's drift hits all of them alike);
the figures are medians over the rounds of the wall-clock time, with each command's ratios taken round by round.
`import everything` is what `trl-won --help` cost before the package imported lazily: the interpreter importing
trl_won's trainers, judges and West-of-N (torch, transformers, TRL). `--before DIR` also times the subcommands' help
of another copy of the package (e.g. `git archive main trl_won | tar -x -C /tmp/before`), run from that folder.

```bash
python benchmarks/cli_help.py              # 7 rounds
python benchmarks/cli_help.py --rounds 15 --before /tmp/before
```
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


SUBCOMMANDS = ("label", "demo", "rrhf", "west-of-n")


def commands(before: str | None = None) -> dict[str, tuple[list[str], str | None]]:
    """name -> (command, working directory)."""
    trl_won = [sys.executable, "-m", "trl_won"]
    runs = {
        "trl --help (baseline)": ([shutil.which("trl") or "trl", "--help"], None),
        "trl-won --help": ([*trl_won, "--help"], None),
        "trl-won rlhf (mistyped)": ([*trl_won, "rlhf"], None),
        "import everything (before)": (
            [sys.executable, "-c", "import trl_won.rrhf, trl_won.rlaif, trl_won.west_of_n"],
            None,
        ),
    }
    for name in SUBCOMMANDS:
        runs[f"trl-won {name} --help"] = ([*trl_won, name, "--help"], None)
        if before is not None:  # `python -m` puts the working directory first on sys.path
            runs[f"trl-won {name} --help (before)"] = ([*trl_won, name, "--help"], before)
    return runs


def wall_time(command: list[str], cwd: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, cwd=cwd)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="Runs of each command (after one warm-up round).")
    parser.add_argument("--before", help="A folder holding another copy of `trl_won` to time the subcommands of.")
    args = parser.parse_args(argv)
    runs = commands(args.before)
    times = {name: [] for name in runs}
    for round_index in range(args.rounds + 1):
        for name, (command, cwd) in runs.items():
            elapsed = wall_time(command, cwd)
            if round_index:  # the first round warms the file cache
                times[name].append(elapsed)
    trl_help, top_help = times["trl --help (baseline)"], times["trl-won --help"]
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.rounds} rounds; wall-clock seconds")
    print(f"{'command':<36}{'median':>9}{'min':>9}{'max':>9}{'/ trl --help':>14}{'/ trl-won --help':>18}")
    for name, values in times.items():
        to_trl = statistics.median(v / b for v, b in zip(values, trl_help, strict=True))
        to_top = statistics.median(v / b for v, b in zip(values, top_help, strict=True))
        median, low, high = statistics.median(values), min(values), max(values)
        print(f"{name:<36}{median:>9.3f}{low:>9.3f}{high:>9.3f}{to_trl:>14.2f}{to_top:>18.2f}")


if __name__ == "__main__":
    main()

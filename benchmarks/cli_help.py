"""Time `trl-won --help`, a mistyped subcommand and each subcommand's `--help` against `trl --help` and
`trl-won --help`, measured in the same run.

Each subcommand's `--help` is timed cold (an empty help cache: the parser is built, which for rrhf and west-of-n
imports TRL's training arguments, hence torch) and warm (the text read from the cache, trl_won/cli/help_cache.py).
Every run uses a temporary cache folder (`TRL_WON_CACHE_DIR`): a fresh empty one for a cold run, one filled in the
warm-up round for the warm runs; the user's cache is not touched.

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
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


SUBCOMMANDS = ("label", "demo", "rrhf", "west-of-n")


def commands(before: str | None = None) -> dict[str, tuple[list[str], str | None, str]]:
    """name -> (command, working directory, help cache: "cold" for an empty one, "warm" for a filled one)."""
    trl_won = [sys.executable, "-m", "trl_won"]
    runs = {
        "trl --help (baseline)": ([shutil.which("trl") or "trl", "--help"], None, "warm"),
        "trl-won --help": ([*trl_won, "--help"], None, "warm"),
        "trl-won rlhf (mistyped)": ([*trl_won, "rlhf"], None, "warm"),
        "import everything (before)": (
            [sys.executable, "-c", "import trl_won.rrhf, trl_won.rlaif, trl_won.west_of_n"],
            None,
            "warm",
        ),
    }
    for name in SUBCOMMANDS:
        runs[f"trl-won {name} --help (cold)"] = ([*trl_won, name, "--help"], None, "cold")
        runs[f"trl-won {name} --help (warm)"] = ([*trl_won, name, "--help"], None, "warm")
        if before is not None:  # `python -m` puts the working directory first on sys.path
            runs[f"trl-won {name} --help (before)"] = ([*trl_won, name, "--help"], before, "cold")
    return runs


def wall_time(command: list[str], cwd: str | None, cache: str) -> float:
    env = {**os.environ, "TRL_WON_CACHE_DIR": cache}
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, cwd=cwd, env=env)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="Runs of each command (after one warm-up round).")
    parser.add_argument("--before", help="A folder holding another copy of `trl_won` to time the subcommands of.")
    args = parser.parse_args(argv)
    runs = commands(args.before)
    times = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="trl-won-help-bench-") as folder:
        warm_cache, cold_caches = os.path.join(folder, "warm"), itertools.count()
        for round_index in range(args.rounds + 1):
            for name, (command, cwd, cache) in runs.items():
                cache = os.path.join(folder, f"cold-{next(cold_caches)}") if cache == "cold" else warm_cache
                elapsed = wall_time(command, cwd, cache)
                if round_index:  # the first round warms the file cache (and fills the help cache)
                    times[name].append(elapsed)
    trl_help, top_help = times["trl --help (baseline)"], times["trl-won --help"]
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.rounds} rounds; wall-clock seconds")
    print(f"{'command':<38}{'median':>9}{'min':>9}{'max':>9}{'/ trl --help':>14}{'/ trl-won --help':>18}")
    for name, values in times.items():
        to_trl = statistics.median(v / b for v, b in zip(values, trl_help, strict=True))
        to_top = statistics.median(v / b for v, b in zip(values, top_help, strict=True))
        median, low, high = statistics.median(values), min(values), max(values)
        print(f"{name:<38}{median:>9.3f}{low:>9.3f}{high:>9.3f}{to_trl:>14.2f}{to_top:>18.2f}")


if __name__ == "__main__":
    main()

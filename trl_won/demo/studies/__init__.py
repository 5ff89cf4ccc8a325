"""Studies: the papers' claims measured as trends, over a sweep and several seeds (`trl-won demo --study NAME`).

- `west-of-n` (`west_of_n.py`): student accuracy against N and against the number of unlabeled prompts, with HF50% and
  HF100% as references and the pairs' oracle accuracy beside it, and why the student stays below HF100%.
- `rlaif` (`rlaif.py`): the judge's position bias and its alignment with the oracle against the judge's size.
- `rrhf` (`rrhf.py`): offline candidates vs on-policy sampling vs both, mean oracle reward.

Each study writes `study.json` (every number, per seed), `study.md` (its tables and what shows and what does not) and
`study.png` to its output directory; `common.py` holds what they share.
"""

from pathlib import Path


STUDIES = ("west-of-n", "rlaif", "rrhf")


def run_study(
    name: str, output_dir: str | Path, seeds: list[int], quick: bool = False, show_progress: bool = True
) -> dict[str, Path]:
    """Run the study `name` (one of `STUDIES`) over `seeds` and return the paths of the files it wrote.

    `quick` runs the test-suite size (a reduced sweep on `DemoSizes.quick()`: sane, not significant).
    """
    if name == "west-of-n":
        from .west_of_n import run
    elif name == "rlaif":
        from .rlaif import run
    elif name == "rrhf":
        from .rrhf import run
    else:
        raise ValueError(f"Unknown study {name!r}; expected one of {', '.join(STUDIES)}.")
    if not seeds:
        raise ValueError("A study needs at least one seed.")
    return run(Path(output_dir), list(seeds), quick=quick, show_progress=show_progress)

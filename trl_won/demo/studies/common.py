"""What the studies share: the per-seed base pipeline, aggregation over seeds, tables, the line figure, the files."""

import io
import json
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation import mean_and_stderr
from ..pipeline import DemoPipeline, library_progress_bars_off
from ..sizes import DemoSizes


def base_pipeline(sizes: DemoSizes, output_dir: Path, human_reward_models: bool = True) -> DemoPipeline:
    """A [`DemoPipeline`] of one seed run up to what most arms start from: the world, the SFT policy, the human and
    held-out pairs and (with `human_reward_models`) the HF50% and HF100% reward models. Quiet: the study shows one
    progress bar of its own."""
    pipeline = DemoPipeline(sizes, str(output_dir), show_progress=False)
    pipeline.build_world()
    pipeline.build_tokenizer()
    pipeline.train_policy()
    pipeline.label_pairs()
    if human_reward_models:
        pipeline.train_human_reward_models()
    return pipeline


@contextmanager
def quiet_stages():
    """Silence what the inner stages print (trainer metrics, progress bars of `datasets` and `transformers`, model
    load reports), so that a study shows only its own progress bar. Errors still raise; settings are restored."""
    import transformers

    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        with library_progress_bars_off(), redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        transformers.utils.logging.set_verbosity(verbosity)


def seed_result(path: Path, identity: dict, compute: Callable[[], dict]) -> dict:
    """One seed's results, kept in the JSON file `path` as soon as they are computed: a rerun of the same study (same
    `identity`: sizes, sweep) reuses them instead of training again, so a crash or an interrupted run loses at most
    the seed in progress. A file of another study setting is replaced; an unreadable one is an error naming it."""
    from ...utils import atomic_write_text

    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); delete it to run that seed again.") from None
        if stored.get("identity") == json.loads(json.dumps(identity, default=str)):
            return stored["result"]
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"identity": identity, "result": result}, default=str))
    return json.loads(json.dumps(result, default=str))


def over_seeds(values: Sequence[float]) -> dict:
    """`{"mean", "stderr", "per_seed"}` of one measurement over seeds (standard error 0 for one seed)."""
    mean, stderr = mean_and_stderr(list(values))
    return {"mean": mean, "stderr": stderr, "per_seed": list(values)}


def judged(difference: float, stderr: float, seeds: int) -> str:
    """The demo report's verdict on a claim that `difference > 0` (`"shows"` beyond 2 standard errors, `"within
    noise"`, `"does not show"`), or `"one seed: not judged"` when there is no standard error over seeds."""
    from ..report import verdict

    return verdict(difference, stderr) if seeds > 1 else "one seed: not judged"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table; floats are printed as they come, so format them before."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Curve:
    """One line of a panel: y (mean over seeds, with 1 s.e. bars) against x."""

    label: str
    x: list[float]
    mean: list[float]
    stderr: list[float]


@dataclass
class Panel:
    """One panel of a study figure: curves, and horizontal references (label -> (mean, s.e.), drawn as a line
    with a band of 1 s.e.)."""

    title: str
    xlabel: str
    ylabel: str
    curves: list[Curve]
    references: dict[str, tuple[float, float]] = field(default_factory=dict)
    log_x: bool = False


def write_line_figure(path: Path, title: str, panels: Sequence[Panel]) -> Path:
    """Draw `panels` side by side to the PNG `path` (needs matplotlib; draws off-screen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.4), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        for curve in panel.curves:
            axis.errorbar(curve.x, curve.mean, yerr=curve.stderr, marker="o", capsize=3, label=curve.label)
        styles = ["--", ":", "-."]
        for i, (label, (mean, stderr)) in enumerate(panel.references.items()):
            line = axis.axhline(mean, linestyle=styles[i % len(styles)], color=f"C{len(panel.curves) + i}")
            axis.axhspan(mean - stderr, mean + stderr, color=line.get_color(), alpha=0.12)
            line.set_label(label)
        if panel.log_x:
            axis.set_xscale("log", base=2)
            xs = sorted({x for curve in panel.curves for x in curve.x})
            axis.set_xticks(xs)
            axis.set_xticklabels([f"{x:g}" for x in xs])
        axis.set_title(panel.title, fontsize=10)
        axis.set_xlabel(panel.xlabel, fontsize=9)
        axis.set_ylabel(panel.ylabel, fontsize=9)
        axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_study_files(
    output_dir: Path, results: dict, report: str, draw: Callable[[Path], Path] | None
) -> dict[str, Path]:
    """Write `study.json`, `study.md` and (with matplotlib, through `draw(path)`) `study.png`; return their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {"results": output_dir / "study.json", "report": output_dir / "study.md"}
    files["results"].write_text(json.dumps(results, indent=2, default=str))
    if draw is not None:
        try:
            files["figure"] = draw(output_dir / "study.png")
        except ImportError:
            pass  # the report says how to get the figure
    files["report"].write_text(report)
    return files

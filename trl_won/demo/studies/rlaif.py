"""RLAIF study: the judge's position bias and its alignment with the oracle against the judge's size.

The paper (Lee et al. 2023, PaLM 2 XS / S / L) reports that larger AI labelers agree better with humans and prefer the
same *position* after the pair is swapped less often. Here, per seed, judges of several sizes are trained the same way
at their size: a tiny LM of that size fine-tuned on the world's demonstrations exactly as the demo's policy is (so it
knows the world's language), then trained on the world's judge requests towards the same biased targets as the demo's
judge (`JudgeBias`: `P("1") = 0.3 + 0.7 * sigmoid((r1 - r2) / 0.5)`). The judge of the demo's own size starts from the
seed's policy itself, so it is the demo's judge. Every judge of a seed is measured on the same held-out pairs, as
`DemoPipeline.rlaif` measures its judge ([`judge_metrics`]), and labels the seed's human pairs.

The reference is the *ideal judge* of this world: the targets themselves, in both orders, on the same pairs. Order
averaging makes it agree with the oracle on every pair, but one order at a time it still prefers the first response
on close pairs: its same-position rate is the floor a judge that fits its targets perfectly reaches. In this world a
larger judge can only approach that floor (its targets are biased); the paper's larger LLMs are less biased for
reasons this world does not model.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ...rlaif import PairwiseJudgement
from ..labels import JudgeBias
from ..pipeline import DemoPipeline, _agreement, _oracle_gaps, judge_metrics
from ..report import verdict
from ..sizes import DemoSizes
from .common import (
    Curve,
    Panel,
    base_pipeline,
    markdown_table,
    over_seeds,
    quiet_stages,
    write_line_figure,
    write_study_files,
)


@dataclass(frozen=True)
class JudgeSize:
    """The architecture of one judge (a tiny Llama; intermediate size twice the hidden size)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int

    @property
    def name(self) -> str:
        return f"judge-h{self.hidden_size}-l{self.num_layers}"


# Heads of 8 to 16 dimensions, depth growing with width. 64 is the full demo's judge, 32 the quick demo's.
JUDGE_SIZES = (
    JudgeSize(16, 1, 2, 1),
    JudgeSize(32, 2, 4, 2),
    JudgeSize(64, 2, 4, 2),
    JudgeSize(128, 4, 8, 4),
)
QUICK_JUDGE_SIZES = (JUDGE_SIZES[0], JUDGE_SIZES[1])
IDEAL = "ideal judge (its training targets)"
# The measurements of a judge on the held-out pairs, as `judge_metrics` names them, and how the report shows them.
MEASURES = {
    "alignment_one_order": "alignment, one order",
    "alignment_order_averaged": "alignment, both orders averaged",
    "same_position_rate": "same position in both orders (position bias)",
    "first_position_preference": "verdicts for the response shown first",
    "label_accuracy": "label accuracy on the human pairs",
}


def ideal_judgements(bias: JudgeBias, rewards_a: list[float], rewards_b: list[float]) -> list[PairwiseJudgement]:
    """The judge targets of the pairs `(a, b)` as judgements: `P(a)` with `a` shown first is `P("1")` for
    `(r_a, r_b)`; with `a` shown second it is `P("2") = 1 - P("1")` for `(r_b, r_a)`."""
    return [
        PairwiseJudgement.from_orders(bias.prob_answer_1(ra, rb), 1.0 - bias.prob_answer_1(rb, ra))
        for ra, rb in zip(rewards_a, rewards_b, strict=True)
    ]


def _judge_size_of_policy(sizes: DemoSizes) -> JudgeSize:
    return JudgeSize(sizes.hidden_size, sizes.num_layers, sizes.num_heads, sizes.num_kv_heads)


def measure_judge(pipeline: DemoPipeline, judge, store: Path) -> dict:
    """`judge`'s measurements on the seed's held-out pairs (`judge_metrics`), its per-pair probabilities in both
    orders, and the accuracy of its labels of the seed's human pairs."""
    judgements, a_better = pipeline.judge_held_out_pairs(judge)
    metrics = judge_metrics(judgements, a_better)
    metrics["label_accuracy"] = _agreement(_oracle_gaps(pipeline.judge_labels(judge, store)))
    metrics["p_a_first"] = [j.probability_a_first for j in judgements]
    metrics["p_a_second"] = [j.probability_a_second for j in judgements]
    return metrics


def run_seed(sizes: DemoSizes, output_dir: Path, judge_sizes, progress) -> dict:
    """Every judge size of one seed, and the ideal judge, on that seed's held-out pairs."""
    start = time.perf_counter()
    pipeline = base_pipeline(sizes, output_dir, human_reward_models=False)
    progress.update(1)
    pairs = pipeline.eval_pairs
    a_better = [i % 2 == 0 for i in range(len(pairs))]
    rewards_a = [p.chosen_reward if better else p.rejected_reward for p, better in zip(pairs, a_better)]
    rewards_b = [p.rejected_reward if better else p.chosen_reward for p, better in zip(pairs, a_better)]
    result = {
        "pairs": {"a_better": a_better, "reward_a": rewards_a, "reward_b": rewards_b},
        "ideal": judge_metrics(ideal_judgements(sizes.judge_bias, rewards_a, rewards_b), a_better),
        "judges": {},
        "timings_s": {"base pipeline": round(time.perf_counter() - start, 2)},
    }
    demo_size = _judge_size_of_policy(sizes)
    for size in judge_sizes:
        start = time.perf_counter()
        if size == demo_size:  # the demo's judge: the seed's policy trained as a judge
            lm_path = pipeline.policy_path
        else:
            _, lm_path = pipeline.train_tiny_lm(f"{size.name}-sft", **asdict(size))
        judge = pipeline.train_tiny_judge(lm_path, size.name)
        metrics = measure_judge(pipeline, judge, output_dir / "judge_labels.sqlite")
        metrics["parameters"] = sum(p.numel() for p in judge.model.parameters())
        result["judges"][size.name] = metrics
        result["timings_s"][size.name] = round(time.perf_counter() - start, 2)
        progress.update(1)
    result["timings_s"]["total"] = round(sum(result["timings_s"].values()), 2)
    return result


def summarize(per_seed: dict, judge_sizes) -> dict:
    """Mean and standard error over seeds of every measurement per judge size, of the ideal judge, and of the
    largest-minus-smallest differences (per seed, then over seeds)."""
    seeds = list(per_seed)
    summary = {"judges": {}, "ideal": {}}
    for size in judge_sizes:
        runs = [per_seed[s]["judges"][size.name] for s in seeds]
        summary["judges"][size.name] = {"parameters": runs[0]["parameters"], **asdict(size)}
        for key in MEASURES:
            summary["judges"][size.name][key] = over_seeds([r[key] for r in runs])
    for key in MEASURES:
        if key in per_seed[seeds[0]]["ideal"]:
            summary["ideal"][key] = over_seeds([per_seed[s]["ideal"][key] for s in seeds])
    smallest, largest = judge_sizes[0].name, judge_sizes[-1].name
    summary["largest_minus_smallest"] = {
        key: over_seeds([per_seed[s]["judges"][largest][key] - per_seed[s]["judges"][smallest][key] for s in seeds])
        for key in MEASURES
    }
    summary["largest_minus_ideal"] = {
        key: over_seeds([per_seed[s]["judges"][largest][key] - per_seed[s]["ideal"][key] for s in seeds])
        for key in ("alignment_one_order", "alignment_order_averaged", "same_position_rate")
    }
    return summary


def _pm(entry: dict, percent: bool = True) -> str:
    scale = 100 if percent else 1
    return f"{scale * entry['mean']:.1f} ± {scale * entry['stderr']:.1f}"


def findings(summary: dict, judge_sizes, seeds: list[int]) -> list[str]:
    """One line per part of the paper's trend, judged against the standard error over seeds."""
    smallest, largest = judge_sizes[0], judge_sizes[-1]
    what = f"the largest judge (hidden {largest.hidden_size}) minus the smallest (hidden {smallest.hidden_size})"
    diff = summary["largest_minus_smallest"]
    lines = []
    for key, claim, sign in (
        ("alignment_order_averaged", "Larger judges are better aligned (both orders averaged)", 1),
        ("alignment_one_order", "Larger judges are better aligned (one order)", 1),
        ("same_position_rate", "Larger judges are less position-biased (same position after the swap)", -1),
        ("label_accuracy", "Larger judges label the human pairs more accurately", 1),
    ):
        d = diff[key]
        lines.append(
            f"**{claim}**: {verdict(sign * d['mean'], d['stderr'])} ({what}: {100 * d['mean']:+.1f} ± "
            f"{100 * d['stderr']:.1f} points over {len(seeds)} seed(s))."
        )
    floor = summary["largest_minus_ideal"]["same_position_rate"]
    ideal = summary["ideal"]["same_position_rate"]
    lines.append(
        f"**The ideal judge's floor**: its targets prefer the same position in both orders on "
        f"{_pm(ideal)}% of the pairs (the close ones); the largest judge is {100 * floor['mean']:+.1f} ± "
        f"{100 * floor['stderr']:.1f} points from that floor. A judge here cannot go below it by fitting its targets "
        "better: in this world size buys fit to biased targets, not freedom from the bias."
    )
    return lines


def render(summary: dict, judge_sizes, seeds: list[int], seconds: dict, figure: bool) -> str:
    lines = [
        "# RLAIF study: position bias and alignment against judge size",
        "",
        f"Seeds {', '.join(map(str, seeds))}; mean ± standard error over seeds, in percent. Each judge is a tiny LM"
        " of its size fine-tuned on the world's demonstrations like the policy, then on the judge requests"
        " towards the biased targets; all are measured on each seed's held-out pairs (the same for every size).",
        "",
        "## What shows and what does not",
        "",
    ]
    lines += [f"- {line}" for line in findings(summary, judge_sizes, seeds)]
    lines += ["", "## Judges by size", ""]
    header = ["judge", "parameters", *MEASURES.values()]
    rows = []
    for size in judge_sizes:
        entry = summary["judges"][size.name]
        name = f"hidden {size.hidden_size}, {size.num_layers} layer(s), {size.num_heads} heads"
        rows.append([name, f"{entry['parameters']:,}", *(_pm(entry[key]) for key in MEASURES)])
    ideal = summary["ideal"]
    rows.append([IDEAL, "", *(_pm(ideal[key]) if key in ideal else "100 (by construction)" for key in MEASURES)])
    lines.append(markdown_table(header, rows))
    lines += [
        "",
        "Position bias is the share of held-out pairs whose preferred *position* is the same in both orders (the "
        "judge's verdict flips when the pair is swapped: the RLAIF paper's measure); pairs where an order gives "
        "exactly 1/2 are left out of it.",
        "",
        "## Time per seed",
        "",
        markdown_table(["seed", "seconds"], [[s, f"{seconds[s]:.0f}"] for s in seeds]),
    ]
    if figure:
        lines += ["", "![RLAIF study](study.png)"]
    else:
        lines += ["", 'No figure: matplotlib is not installed (pip install "trl-won[demo]").']
    return "\n".join(lines) + "\n"


def draw(path: Path, summary: dict, judge_sizes) -> Path:
    x = [summary["judges"][s.name]["parameters"] / 1000 for s in judge_sizes]

    def curve(label: str, key: str) -> Curve:
        entries = [summary["judges"][s.name][key] for s in judge_sizes]
        return Curve(label, x, [100 * e["mean"] for e in entries], [100 * e["stderr"] for e in entries])

    def reference(key: str) -> tuple[float, float]:
        entry = summary["ideal"][key]
        return 100 * entry["mean"], 100 * entry["stderr"]

    alignment = Panel(
        "Alignment with the oracle (held-out pairs)",
        "judge parameters (thousands)",
        "%",
        [curve("one order", "alignment_one_order"), curve("both orders averaged", "alignment_order_averaged")],
        {
            "ideal judge, one order": reference("alignment_one_order"),
            "ideal judge, averaged": reference("alignment_order_averaged"),
        },
        log_x=True,
    )
    bias = Panel(
        "Position bias: same position in both orders",
        "judge parameters (thousands)",
        "% of pairs",
        [curve("judge", "same_position_rate"), curve("verdicts for the first response", "first_position_preference")],
        {
            "ideal judge (floor)": reference("same_position_rate"),
            "ideal judge, first response": reference("first_position_preference"),
        },
        log_x=True,
    )
    return write_line_figure(path, "RLAIF: judges of growing size, mean ± s.e. over seeds", [alignment, bias])


def run(output_dir: Path, seeds: list[int], quick: bool, show_progress: bool) -> dict[str, Path]:
    """Train and measure judges of each size for every seed; write `study.json`, `study.md` and `study.png`."""
    from tqdm.auto import tqdm

    make = DemoSizes.quick if quick else DemoSizes.full
    judge_sizes = QUICK_JUDGE_SIZES if quick else JUDGE_SIZES
    per_seed, seconds = {}, {}
    with (
        quiet_stages(),
        tqdm(total=len(seeds) * (1 + len(judge_sizes)), desc="RLAIF study", disable=not show_progress) as progress,
    ):
        for seed in seeds:
            progress.set_postfix(seed=seed)
            per_seed[seed] = run_seed(make(seed=seed), output_dir / f"seed-{seed}", judge_sizes, progress)
            seconds[seed] = per_seed[seed]["timings_s"]["total"]
    summary = summarize(per_seed, judge_sizes)
    results = {
        "study": "rlaif",
        "sizes": asdict(make()) | {"seed": None},
        "judge_sizes": [asdict(s) | {"name": s.name} for s in judge_sizes],
        "seeds": seeds,
        "summary": summary,
        "per_seed": per_seed,
    }
    try:
        import matplotlib  # noqa: F401

        has_figure = True
    except ImportError:
        has_figure = False
    report = render(summary, judge_sizes, seeds, seconds, has_figure)
    return write_study_files(
        output_dir, results, report, (lambda path: draw(path, summary, judge_sizes)) if has_figure else None
    )

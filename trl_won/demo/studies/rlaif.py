"""RLAIF study: the judge's position bias and its alignment with the oracle against the judge's size.

The paper (Lee et al. 2023, PaLM 2 XS / S / L) reports that larger AI labelers agree better with humans and prefer the
same *position* after the pair is swapped less often. Here, per seed, judges of several sizes are trained the same way
at their size: a tiny LM of that size fine-tuned on the world's demonstrations exactly as the demo's policy is (so it
knows the world's language), then trained on the world's judge requests towards the same biased targets as the demo's
judge (`JudgeBias`: `P("1") = 0.3 + 0.7 * sigmoid((r1 - r2) / 0.5)`). The judge of the demo's own size starts from the
seed's policy itself, so it is the demo's judge. Every judge of a seed is measured on the same held-out pairs, as
`DemoPipeline.rlaif` measures its judge ([`judge_metrics`]), and labels the seed's human pairs.

The reference is the *ideal judge* of this world: the targets themselves, in both orders, on the same pairs. Its bias
of 0.3 towards "1" flips a verdict only for pairs less than 0.46 apart in oracle reward ([`flip_threshold`]), and
the world's rewards come in steps of 0.5, so it never prefers the same position in both orders: its bias shows in its
probabilities (mean P("1") = 0.65), not in its verdicts. A trained judge's flips are thus a failure to fit its
targets, which size can reduce; the paper's larger LLMs are less biased for reasons this world does not model.
"""

import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from ...rlaif import PairwiseJudgement
from ..labels import JudgeBias
from ..pipeline import DemoPipeline, _agreement, _oracle_gaps, judge_metrics
from ..sizes import DemoSizes
from .common import (
    Curve,
    Panel,
    base_pipeline,
    judged,
    markdown_table,
    over_seeds,
    quiet_stages,
    seed_result,
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


# Width is the axis (heads of 8 to 16 dimensions; one layer at the smallest, two above, as the demo; a deeper 128
# would cost too much CPU for three seeds). 64 is the full demo's judge, 32 the quick demo's.
JUDGE_SIZES = (
    JudgeSize(16, 1, 2, 1),
    JudgeSize(32, 2, 4, 2),
    JudgeSize(64, 2, 4, 2),
    JudgeSize(128, 2, 8, 4),
)
QUICK_JUDGE_SIZES = (JUDGE_SIZES[0], JUDGE_SIZES[1])
IDEAL = "ideal judge (its training targets)"
# The measurements of a judge on the held-out pairs, as `judge_metrics` names them, and how the report shows them.
MEASURES = {
    "alignment_one_order": "alignment, one order",
    "alignment_order_averaged": "alignment, both orders averaged",
    "same_position_rate": "same position in both orders (position bias)",
    "first_position_preference": "verdicts for the response shown first",
    "mean_p_answer_1": 'mean P("1")',
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
    summary["size_steps"] = {
        f"{larger.name} minus {smaller.name}": {
            key: over_seeds(
                [per_seed[s]["judges"][larger.name][key] - per_seed[s]["judges"][smaller.name][key] for s in seeds]
            )
            for key in MEASURES
        }
        for smaller, larger in zip(judge_sizes, judge_sizes[1:])
    }
    summary["largest_minus_ideal"] = {
        key: over_seeds([per_seed[s]["judges"][largest][key] - per_seed[s]["ideal"][key] for s in seeds])
        for key in ("alignment_one_order", "alignment_order_averaged", "same_position_rate")
    }
    return summary


def _pm(entry: dict, percent: bool = True) -> str:
    scale = 100 if percent else 1
    return f"{scale * entry['mean']:.1f} ± {scale * entry['stderr']:.1f}"


def flip_threshold(bias: JudgeBias) -> float:
    """The oracle-reward gap below which the targets prefer the response shown first in both orders: `P("1") > 1/2`
    with the worse response first when `b + (1 - b) * sigmoid(-gap / T) > 1/2`, i.e. `gap < T * ln((1 - b) /
    (1/2 - b) - 1)` (every gap when `b >= 1/2`)."""
    if bias.position_bias >= 0.5:
        return math.inf
    q = (0.5 - bias.position_bias) / (1 - bias.position_bias)
    return bias.temperature * math.log(1 / q - 1)


def findings(summary: dict, judge_sizes, seeds: list[int], bias: JudgeBias, min_gap: float) -> list[str]:
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
            f"**{claim}**: {judged(sign * d['mean'], d['stderr'], len(seeds))} ({what}: {100 * d['mean']:+.1f} ± "
            f"{100 * d['stderr']:.1f} points over {len(seeds)} seed(s))."
        )
    for key, claim, sign in (
        ("alignment_order_averaged", "alignment (both orders averaged) rises", 1),
        ("same_position_rate", "position bias falls", -1),
    ):
        parts = []
        for smaller, larger in zip(judge_sizes, judge_sizes[1:]):
            d = summary["size_steps"][f"{larger.name} minus {smaller.name}"][key]
            parts.append(
                f"hidden {smaller.hidden_size} to {larger.hidden_size}: {100 * d['mean']:+.1f} ± "
                f"{100 * d['stderr']:.1f} ({judged(sign * d['mean'], d['stderr'], len(seeds))})"
            )
        lines.append(f"**At each step up in size, {claim}**: " + "; ".join(parts) + ".")
    ideal, largest_entry = summary["ideal"], summary["judges"][largest.name]
    threshold = flip_threshold(bias)
    lines.append(
        f"**The ideal judge** (the targets, in both orders) prefers the same position in both orders on "
        f"{_pm(ideal['same_position_rate'])}% of the pairs and agrees with the oracle from one order on "
        f"{_pm(ideal['alignment_one_order'])}%: the targets' bias of {bias.position_bias:g} flips a verdict only "
        f"for pairs less than {threshold:.2f} apart in oracle reward, and the closest held-out pairs are "
        f'{min_gap:g} apart. Its bias shows in its probabilities instead (mean P("1") '
        f"{_pm(ideal['mean_p_answer_1'])}%, against {_pm(largest_entry['mean_p_answer_1'])}% for the largest judge). "
        "So here every verdict a judge flips with the order is a failure to fit its targets, which size can reduce; "
        "the paper's larger LLMs are less biased for reasons this world does not model."
    )
    return lines


def render(
    summary: dict, judge_sizes, seeds: list[int], seconds: dict, figure: bool, bias: JudgeBias, min_gap: float
) -> str:
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
    lines += [f"- {line}" for line in findings(summary, judge_sizes, seeds, bias, min_gap)]
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
    x = [round(summary["judges"][s.name]["parameters"] / 1000, 1) for s in judge_sizes]

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
        "Position bias (one order at a time)",
        "judge parameters (thousands)",
        "% of pairs",
        [
            curve("same position in both orders", "same_position_rate"),
            curve("verdicts for the first response", "first_position_preference"),
            curve('mean P("1")', "mean_p_answer_1"),
        ],
        {
            "ideal judge, same position": reference("same_position_rate"),
            "ideal judge, first response": reference("first_position_preference"),
            'ideal judge, mean P("1")': reference("mean_p_answer_1"),
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
        for i, seed in enumerate(seeds):
            progress.set_postfix(seed=seed)
            sizes, seed_dir = make(seed=seed), output_dir / f"seed-{seed}"
            identity = {"sizes": asdict(sizes), "judge_sizes": [asdict(s) for s in judge_sizes]}
            per_seed[seed] = seed_result(
                seed_dir / "seed.json", identity, partial(run_seed, sizes, seed_dir, judge_sizes, progress)
            )
            progress.update((i + 1) * (1 + len(judge_sizes)) - progress.n)  # a seed kept from an earlier run
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
    min_gap = min(
        abs(a - b)
        for seed in per_seed.values()
        for a, b in zip(seed["pairs"]["reward_a"], seed["pairs"]["reward_b"], strict=True)
    )
    report = render(summary, judge_sizes, seeds, seconds, has_figure, make().judge_bias, min_gap)
    return write_study_files(
        output_dir, results, report, (lambda path: draw(path, summary, judge_sizes)) if has_figure else None
    )

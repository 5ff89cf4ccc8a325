"""The West-of-N study: student accuracy against N and against the number of unlabeled prompts, and why the student
stays below HF100% although its pairs are mostly right (`trl-won demo --study west-of-n`).

For each seed, the demo's world, SFT policy, human pairs, held-out pairs and HF50%/HF100% reward models
([`base_pipeline`]); then students trained as the demo trains its West-of-N reward model (`WestOfNGenerator` pairs
labeled by HF50%, `mix_preference_datasets` with HF50%, `RewardTrainer`, accuracy on the same held-out gold pairs):

- the N sweep: N in {2, 4, 8, 16, 32} on the demo's 750 unlabeled prompts, every pair mixed with HF50%'s 750 (the
  demo's setting at N = 16: the same number as the demo reports);
- the prompt sweep at N = 16: 1500 and 3000 unlabeled prompts (the first of a longer draw of the same prompts, so
  the other draws and HF50%/HF100% do not change), mixed two ways: every pair (2 or 4 West-of-N pairs per HF50%
  pair), or the paper's 1:1 mix with the confidence filter choosing the pairs (the most confident 750);
- the investigation at N = 16 on 750 prompts: the same samples with the oracle picking best and worst (perfect
  labels, the same distribution); gold-labeled pairs of two random samples (the held-out pairs' distribution, perfect
  labels), on 750 and on 3000 prompts; HF50%'s pairs without those the oracle disagrees with, and in the oracle's
  order (its picks, perfect labels); the confidence and likelihood filters; West-of-N pairs without HF50%; and the
  held-out accuracy split by the held-out pair's oracle gap, beside how the training pairs spread over the same gaps.

Per seed and point: the student's held-out accuracy, its paired difference against HF50% and HF100% (same held-out
pairs), the pairs' count, oracle accuracy and mean oracle gap. Over seeds: mean and standard error.
"""

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..evaluation import paired_difference
from ..names import HF50, HF100
from ..pipeline import DemoPipeline, _oracle_gaps, pair_details
from ..report import verdict, verdict_comparable
from ..sizes import DemoSizes
from ..world import oracle_reward_func
from .common import (
    Curve,
    Panel,
    base_pipeline,
    markdown_table,
    over_seeds,
    quiet_stages,
    seed_result,
    write_line_figure,
    write_study_files,
)


# Oracle-gap bins (chosen minus rejected) the held-out accuracy is split by: close, middle and far pairs.
GAP_BINS = ((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, math.inf))
TIE = "tie"


def gap_bin(gap: float) -> str:
    """The name of the bin of an oracle gap's size (`"tie"` for 0)."""
    size = abs(gap)
    if size == 0:
        return TIE
    for low, high in GAP_BINS:
        if low < size <= high:
            return _bin_name(low, high)
    raise ValueError(f"Oracle gap {gap} is not a finite number.")


def _bin_name(low: float, high: float) -> str:
    return f"> {low:g}" if math.isinf(high) else f"({low:g}, {high:g}]"


BIN_NAMES = [_bin_name(low, high) for low, high in GAP_BINS]


@dataclass(frozen=True)
class Arm:
    """One student reward model of the study.

    Args:
        key (`str`): Its name in the tables and `study.json`.
        group (`str`): `"n"` (the N sweep), `"prompts"` (the prompt sweep) or `"investigation"`.
        n (`int`): Samples per prompt.
        prompts (`int`): Unlabeled prompts (the first of the world's West-of-N prompts).
        strategy (`str`): `WestOfNConfig.strategy` (`"naive"` with `n = 2`: two random samples).
        labeler (`str`): `"HF50%"` (the base reward model) or `"oracle"` (the true reward: perfect labels).
        mix (`str`): `"all"` (every pair with HF50%), `"confident 1:1"` (as many pairs as HF50% has, the most
            confident ones: the paper's mix) or `"pairs only"` (no HF50%).
        confidence_quantile (`float`, *optional*): `WestOfNConfig.confidence_quantile`.
        likelihood_quantile (`float`, *optional*): Drop pairs with a response whose policy log-likelihood is below
            this quantile of the picked responses' (`WestOfNConfig.min_logp` set to that value).
        relabel (`str`, *optional*): After the base model picked the pairs, `"drop wrong"` drops those the oracle
            disagrees with (and oracle ties); `"oracle"` also gives them the oracle's order (swaps chosen and
            rejected where the oracle disagrees).
        what (`str`): What the arm tests, for the report.
    """

    key: str
    group: str
    n: int
    prompts: int
    strategy: str = "west_of_n"
    labeler: str = HF50
    mix: str = "all"
    confidence_quantile: float | None = None
    likelihood_quantile: float | None = None
    relabel: str | None = None
    what: str = ""

    @property
    def pairs_name(self) -> str:
        """The `pairs_dir` of its generated pairs (shared by arms that only filter or mix them differently)."""
        labeler = "oracle" if self.labeler == "oracle" else "hf50"
        return f"{labeler}-{self.strategy}-n{self.n}-p{self.prompts}"


@dataclass(frozen=True)
class StudyPlan:
    """What the study sweeps: the demo's sizes (seed replaced per seed), N values on the demo's prompts, prompt
    counts at `n` (the first is the demo's `won_prompts`), and the investigation at `n`."""

    sizes: DemoSizes
    n_values: tuple[int, ...]
    prompt_counts: tuple[int, ...]
    n: int

    @classmethod
    def full(cls) -> "StudyPlan":
        sizes = DemoSizes.full()
        return cls(sizes, (2, 4, 8, 16, 32), (sizes.won_prompts, 2 * sizes.won_prompts, 4 * sizes.won_prompts), 16)

    @classmethod
    def quick(cls) -> "StudyPlan":
        sizes = DemoSizes.quick()
        return cls(sizes, (2, sizes.won_n), (sizes.won_prompts, 2 * sizes.won_prompts), sizes.won_n)

    def __post_init__(self):
        if self.n not in self.n_values:
            raise ValueError(f"The prompt sweep's N ({self.n}) must be one of the N values {self.n_values}.")
        if self.prompt_counts[0] != self.sizes.won_prompts:
            raise ValueError(f"The first prompt count must be the demo's won_prompts ({self.sizes.won_prompts}).")

    def n_key(self, n: int) -> str:
        return f"N={n}"

    @property
    def reference_key(self) -> str:
        """The demo's West-of-N student (N = `n` on the demo's prompts), the investigation's point of comparison."""
        return self.n_key(self.n)

    def arms(self) -> list[Arm]:
        n, base, most = self.n, self.prompt_counts[0], self.prompt_counts[-1]
        arms = [Arm(self.n_key(k), "n", k, base, what=f"West-of-N, N = {k}") for k in self.n_values]
        for count in self.prompt_counts[1:]:
            arms.append(Arm(f"{count} prompts, all pairs", "prompts", n, count, what="every pair with HF50%"))
            arms.append(
                Arm(
                    f"{count} prompts, confident 1:1",
                    "prompts",
                    n,
                    count,
                    mix="confident 1:1",
                    confidence_quantile=max(0.0, 1 - base / count),
                    what=f"the {base} most confident pairs with HF50% (the paper's 1:1 mix and confidence filter)",
                )
            )
        arms += [
            Arm(
                "oracle best/worst",
                "investigation",
                n,
                base,
                labeler="oracle",
                what=f"the same samples, best and worst picked by the oracle (perfect labels, N = {n})",
            ),
            Arm(
                "gold random pairs",
                "investigation",
                2,
                base,
                strategy="naive",
                labeler="oracle",
                what="two random samples per prompt, labeled by the oracle (the held-out pairs' distribution)",
            ),
            Arm(
                f"gold random pairs, {most} prompts",
                "investigation",
                2,
                most,
                strategy="naive",
                labeler="oracle",
                what=f"the same on {most} prompts (how far the student model goes with more correct close pairs)",
            ),
            Arm(
                "West-of-N, wrong pairs dropped",
                "investigation",
                n,
                base,
                relabel="drop wrong",
                what="the West-of-N pairs without those the oracle disagrees with (a perfect filter)",
            ),
            Arm(
                "West-of-N, oracle order",
                "investigation",
                n,
                base,
                relabel="oracle",
                what="the pairs HF50% picked (best, worst), put in the oracle's order (HF50%'s picks, perfect labels)",
            ),
            Arm(
                "confidence filter 0.5",
                "investigation",
                n,
                base,
                confidence_quantile=0.5,
                what="the more confident half of the West-of-N pairs (the paper's confidence filter)",
            ),
            Arm(
                "likelihood filter 0.1",
                "investigation",
                n,
                base,
                likelihood_quantile=0.1,
                what="pairs whose responses are both above the 10% quantile of policy log-likelihood",
            ),
            Arm(
                "West-of-N pairs only",
                "investigation",
                n,
                base,
                mix="pairs only",
                what="the West-of-N pairs without HF50%",
            ),
        ]
        return arms

    def comparisons(self) -> list[tuple[str, str]]:
        """(a, b) pairs of arms (or HF50%/HF100%) compared by paired difference on the held-out pairs, per seed."""
        ref, most = self.reference_key, self.prompt_counts[-1]
        pairs = [(HF100, HF50), (self.n_key(self.n_values[-1]), self.n_key(self.n_values[0]))]
        pairs += [(f"{count} prompts, all pairs", ref) for count in self.prompt_counts[1:]]
        pairs += [
            (f"{most} prompts, confident 1:1", ref),
            (f"{most} prompts, confident 1:1", f"{most} prompts, all pairs"),
        ]
        pairs += [(arm.key, ref) for arm in self.arms() if arm.group == "investigation"]
        pairs += [("gold random pairs", "oracle best/worst"), ("oracle best/worst", "West-of-N, oracle order")]
        return pairs


def _by_gap(hits: list[float], gaps: list[float]) -> dict[str, float | None]:
    """Held-out accuracy per oracle-gap bin (`None` for an empty bin)."""
    groups: dict[str, list[float]] = {name: [] for name in BIN_NAMES}
    for hit, gap in zip(hits, gaps, strict=True):
        groups[gap_bin(gap)].append(hit)
    return {name: (sum(g) / len(g) if g else None) for name, g in groups.items()}


def _gap_shares(gaps: list[float]) -> dict[str, float]:
    """Share of pairs per oracle-gap bin of their size, and of oracle ties."""
    names = [TIE, *BIN_NAMES]
    counts = dict.fromkeys(names, 0)
    for gap in gaps:
        counts[gap_bin(gap)] += 1
    return {name: counts[name] / max(1, len(gaps)) for name in names}


def _relabeled(pairs, how: str):
    """`pairs` without those the oracle disagrees with or ties (`"drop wrong"`), or with those put in the oracle's
    order and the ties dropped (`"oracle"`)."""
    from datasets import Dataset

    if how not in ("drop wrong", "oracle"):
        raise ValueError(f"`relabel` must be 'drop wrong' or 'oracle', got {how!r}.")
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for prompt, chosen, rejected, gap in zip(
        pairs["prompt"], pairs["chosen"], pairs["rejected"], _oracle_gaps(pairs), strict=True
    ):
        if gap == 0 or (gap < 0 and how == "drop wrong"):
            continue
        if gap < 0:
            chosen, rejected = rejected, chosen
        rows["prompt"].append(prompt)
        rows["chosen"].append(chosen)
        rows["rejected"].append(rejected)
    return Dataset.from_dict(rows)


def _difference(a: list[float], b: list[float]) -> dict:
    difference, stderr = paired_difference(a, b)
    return {"difference": difference, "stderr": stderr}


class _Seed:
    """One seed of the study: the base pipeline and the arms' pairs and students."""

    def __init__(self, plan: StudyPlan, seed: int, output_dir: Path):
        self.plan, self.seed = plan, seed
        self.output_dir = output_dir / f"seed-{seed}"
        # A longer draw of the West-of-N prompts: the first `won_prompts` are the demo's, the other draws do not move.
        self.sizes = replace(plan.sizes, seed=seed, won_prompts=max(plan.prompt_counts))
        self.generated: dict[str, object] = {}

    def build(self) -> dict:
        start = time.perf_counter()
        self.pipeline: DemoPipeline = base_pipeline(self.sizes, self.output_dir)
        p = self.pipeline
        self.eval_gaps = [pair.chosen_reward - pair.rejected_reward for pair in p.eval_pairs]
        human_gaps = [pair.chosen_reward - pair.rejected_reward for pair in p.human_pairs]
        record = {
            "seed": self.seed,
            "references": {
                name: {"accuracy": p.results["reward_model_accuracy"][name], "accuracy_by_gap": self._by_gap(name)}
                for name in (HF50, HF100)
            },
            "held_out_pairs": len(p.eval_pairs),
            "held_out_gap_shares": _gap_shares(self.eval_gaps),
            "human_pairs": len(p.human_pairs),
            "human_label_accuracy": p.results["world"]["human_label_accuracy"],
            "human_pairs_gap_shares": _gap_shares(human_gaps),
            "mean_human_pair_gap": sum(abs(g) for g in human_gaps) / len(human_gaps),
            "mean_held_out_gap": sum(self.eval_gaps) / len(self.eval_gaps),
            "hf50_pairs": len(p.hf50_pairs),
            "timings_s": {"base": round(time.perf_counter() - start, 2)},
            "arms": {},
        }
        return record

    def _by_gap(self, name: str) -> dict:
        return _by_gap(self.pipeline.eval_hits[name], self.eval_gaps)

    def _generated(self, arm: Arm):
        """The arm's generated pairs, unfiltered (generated once per labeler, strategy, N and prompt count)."""
        if arm.pairs_name not in self.generated:
            tasks = self.pipeline.world.won_tasks[: arm.prompts]
            self.generated[arm.pairs_name] = self.pipeline._west_of_n_pairs(
                arm.strategy,
                arm.n,
                tasks=tasks,
                pairs_dir=str(self.output_dir / "west_of_n" / arm.pairs_name),
                reward_funcs=oracle_reward_func if arm.labeler == "oracle" else None,
            )
        return self.generated[arm.pairs_name]

    def _pairs(self, arm: Arm):
        """The arm's pairs after its filters, through `read_west_of_n_pairs` (the generator's own filtering)."""
        from ...west_of_n import WestOfNConfig, read_west_of_n_pairs

        pairs = self._generated(arm)
        if arm.relabel is not None:
            return _relabeled(pairs, arm.relabel)
        if arm.confidence_quantile is None and arm.likelihood_quantile is None:
            return pairs
        min_logp = None
        if arm.likelihood_quantile is not None:
            logps = sorted(list(pairs["chosen_logp"]) + list(pairs["rejected_logp"]))
            min_logp = logps[int(arm.likelihood_quantile * (len(logps) - 1))]
        args = WestOfNConfig(confidence_quantile=arm.confidence_quantile, min_logp=min_logp)
        return read_west_of_n_pairs(self.output_dir / "west_of_n" / arm.pairs_name, args)

    def run_arm(self, arm: Arm) -> dict:
        start = time.perf_counter()
        p = self.pipeline
        generated = self._generated(arm)
        pairs = self._pairs(arm)
        if arm.mix == "pairs only":
            p._train_rm(arm.key, pairs["prompt"], pairs["chosen"], pairs["rejected"])
            training_pairs = len(pairs)
        else:
            ratio = 1.0 if arm.mix == "confident 1:1" else None
            p._train_student(arm.key, pairs, ratio=ratio)
            training_pairs = len(p.hf50_pairs) + (len(pairs) if ratio is None else min(len(pairs), len(p.hf50_pairs)))
        hits = p.eval_hits[arm.key]
        return {
            "accuracy": p.results["reward_model_accuracy"][arm.key],
            "vs_hf50": _difference(hits, p.eval_hits[HF50]),
            "vs_hf100": _difference(hits, p.eval_hits[HF100]),
            "generated_pairs": len(generated),
            **pair_details(pairs),
            "training_pairs": training_pairs,
            "pair_gap_shares": _gap_shares(_oracle_gaps(pairs)),
            "accuracy_by_gap": self._by_gap(arm.key),
            "seconds": round(time.perf_counter() - start, 2),
        }

    def comparisons(self) -> dict:
        hits = self.pipeline.eval_hits
        return {f"{a} vs {b}": _difference(hits[a], hits[b]) for a, b in self.plan.comparisons()}


def _aggregate(plan: StudyPlan, per_seed: list[dict]) -> dict:
    def over(get) -> dict:
        return over_seeds([get(record) for record in per_seed])

    summary = {
        "references": {
            name: {
                "accuracy": over(lambda r, name=name: r["references"][name]["accuracy"]),
                "accuracy_by_gap": _over_bins([r["references"][name]["accuracy_by_gap"] for r in per_seed]),
            }
            for name in (HF50, HF100)
        },
        "held_out_gap_shares": _over_bins([r["held_out_gap_shares"] for r in per_seed]),
        "human_pairs_gap_shares": _over_bins([r["human_pairs_gap_shares"] for r in per_seed]),
        "human_label_accuracy": over(lambda r: r["human_label_accuracy"]),
        "mean_human_pair_gap": over(lambda r: r["mean_human_pair_gap"]),
        "mean_held_out_gap": over(lambda r: r["mean_held_out_gap"]),
        "arms": {},
        "comparisons": {
            name: over(lambda r, name=name: r["comparisons"][name]["difference"])
            for name in per_seed[0]["comparisons"]
        },
        "seconds_per_seed": over(lambda r: r["timings_s"]["total"]),
    }
    for arm in plan.arms():
        records = [r["arms"][arm.key] for r in per_seed]
        measured = {
            key: over_seeds([rec[key] for rec in records])
            for key in ("accuracy", "pairs", "pair_accuracy", "oracle_ties", "mean_oracle_gap", "training_pairs")
        }
        measured["vs_hf50"] = over_seeds([rec["vs_hf50"]["difference"] for rec in records])
        measured["vs_hf100"] = over_seeds([rec["vs_hf100"]["difference"] for rec in records])
        measured["accuracy_by_gap"] = _over_bins([rec["accuracy_by_gap"] for rec in records])
        measured["pair_gap_shares"] = _over_bins([rec["pair_gap_shares"] for rec in records])
        summary["arms"][arm.key] = measured
    return summary


def _over_bins(per_seed: list[dict]) -> dict:
    """Mean and s.e. over seeds of each bin (seeds with an empty bin left out)."""
    out = {}
    for name in per_seed[0]:
        values = [record[name] for record in per_seed if record[name] is not None]
        out[name] = over_seeds(values) if values else None
    return out


# -- report -------------------------------------------------------------------------------------------------------


def _pct(stat: dict | None) -> str:
    if stat is None:
        return "-"
    return f"{100 * stat['mean']:.1f} ± {100 * stat['stderr']:.1f}"


def _points(stat: dict) -> str:
    return f"{100 * stat['mean']:+.1f} ± {100 * stat['stderr']:.1f}"


def _num(stat: dict, digits: int = 2) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['stderr']:.{digits}f}"


def render_report(plan: StudyPlan, results: dict, figure: str | None) -> str:
    s = results["summary"]
    refs, arms, comps = s["references"], s["arms"], s["comparisons"]
    seeds = results["seeds"]
    lines = [
        "# West-of-N study: student accuracy against N and the number of unlabeled prompts",
        "",
        f"Seeds {', '.join(map(str, seeds))} ({plan.sizes.name} sizes); every number is the mean over seeds ± its "
        "standard error over seeds; differences are in accuracy points, paired on the same held-out gold pairs "
        f"(about {results['per_seed'][0]['held_out_pairs']} per seed). Wall time per seed: "
        f"{_num(s['seconds_per_seed'], 0)} s.",
        "",
        f"HF50%: {_pct(refs[HF50]['accuracy'])}%, HF100%: {_pct(refs[HF100]['accuracy'])}% "
        f"(HF100% - HF50%: {_points(comps[f'{HF100} vs {HF50}'])} points). Human labels agree with the oracle "
        f"{_pct(s['human_label_accuracy'])}% of the time.",
        "",
    ]
    if figure:
        lines += [f"![West-of-N study]({figure})", ""]
    lines += ["## What shows, and what does not", "", *_verdicts(plan, s), ""]
    header = ["student", "held-out accuracy %", "vs HF50% (points)", "vs HF100% (points)", "pairs", "pairs right %"]
    header += ["mean oracle gap"]

    def row(key: str, label: str | None = None) -> list:
        a = arms[key]
        return [
            label or key,
            _pct(a["accuracy"]),
            _points(a["vs_hf50"]),
            _points(a["vs_hf100"]),
            _num(a["pairs"], 0),
            _pct(a["pair_accuracy"]),
            _num(a["mean_oracle_gap"]),
        ]

    ref_rows = [[HF50, _pct(refs[HF50]["accuracy"]), "", "", "", "", ""]]
    ref_rows += [[HF100, _pct(refs[HF100]["accuracy"]), _points(comps[f"{HF100} vs {HF50}"]), "", "", "", ""]]
    base = plan.prompt_counts[0]
    lines += [f"## Student accuracy against N ({base} unlabeled prompts, every pair mixed with HF50%)", ""]
    lines += [markdown_table(header, ref_rows + [row(plan.n_key(n)) for n in plan.n_values]), ""]
    lines += [f"## Student accuracy against the number of unlabeled prompts (N = {plan.n})", ""]
    prompt_rows = [row(plan.reference_key, f"{base} prompts (1:1)")]
    for count in plan.prompt_counts[1:]:
        prompt_rows += [row(f"{count} prompts, all pairs"), row(f"{count} prompts, confident 1:1")]
    lines += [markdown_table(header, ref_rows + prompt_rows), ""]
    lines += [
        f"## Why the student stays below HF100%: the investigation (N = {plan.n}, {base} prompts)",
        "",
        "Each arm changes one thing against the demo's West-of-N student; `vs N=...` is the paired difference.",
        "",
    ]
    inv_header = [
        "arm",
        "what",
        "held-out accuracy %",
        "vs HF100%",
        f"vs {plan.reference_key}",
        "pairs",
        "pairs right %",
    ]
    inv_header += ["mean oracle gap"]
    inv_rows = []
    for arm in plan.arms():
        if arm.group != "investigation":
            continue
        a = arms[arm.key]
        inv_rows.append(
            [
                arm.key,
                arm.what,
                _pct(a["accuracy"]),
                _points(a["vs_hf100"]),
                _points(comps[f"{arm.key} vs {plan.reference_key}"]),
                _num(a["pairs"], 0),
                _pct(a["pair_accuracy"]),
                _num(a["mean_oracle_gap"]),
            ]
        )
    lines += [markdown_table(inv_header, inv_rows), ""]
    lines += ["### Held-out accuracy by the held-out pair's oracle gap", ""]
    shown = [HF50, HF100, *(plan.n_key(n) for n in plan.n_values), "oracle best/worst", "gold random pairs"]
    gap_rows = [["held-out pairs in the bin %", *(_pct(s["held_out_gap_shares"][b]) for b in BIN_NAMES)]]
    for name in shown:
        by_gap = refs[name]["accuracy_by_gap"] if name in refs else arms[name]["accuracy_by_gap"]
        gap_rows.append([name, *(_pct(by_gap[b]) for b in BIN_NAMES)])
    lines += [markdown_table(["accuracy % (oracle gap)", *BIN_NAMES], gap_rows), ""]
    lines += ["### How the training pairs spread over the same gaps (share %, oracle ties first)", ""]
    share_rows = [["held-out pairs", *(_pct(s["held_out_gap_shares"][b]) for b in [TIE, *BIN_NAMES])]]
    share_rows.append(["human pairs (HF100%)", *(_pct(s["human_pairs_gap_shares"][b]) for b in [TIE, *BIN_NAMES])])
    for name in [*(plan.n_key(n) for n in plan.n_values), "oracle best/worst", "gold random pairs"]:
        share_rows.append([name, *(_pct(arms[name]["pair_gap_shares"][b]) for b in [TIE, *BIN_NAMES])])
    lines += [markdown_table(["pairs", TIE, *BIN_NAMES], share_rows), ""]
    lines += ["## Per seed: held-out accuracy %", ""]
    per_seed_rows = [[HF50, *(f"{100 * r['references'][HF50]['accuracy']:.1f}" for r in results["per_seed"])]]
    per_seed_rows.append([HF100, *(f"{100 * r['references'][HF100]['accuracy']:.1f}" for r in results["per_seed"])])
    for arm in plan.arms():
        per_seed_rows.append([arm.key, *(f"{100 * r['arms'][arm.key]['accuracy']:.1f}" for r in results["per_seed"])])
    lines += [markdown_table(["reward model", *(f"seed {seed}" for seed in seeds)], per_seed_rows), ""]
    lines += ["## Paired comparisons (points, mean ± s.e. over seeds)", ""]
    lines += [markdown_table(["comparison", "difference"], [[name, _points(c)] for name, c in comps.items()]), ""]
    return "\n".join(lines)


def _verdicts(plan: StudyPlan, s: dict) -> list[str]:
    """One line per claim, judged against the standard error over seeds (see docs/demo.md, "Reading the report")."""
    arms, comps = s["arms"], s["comparisons"]
    lines = []

    def line(claim: str, stat: dict, judge=verdict, detail: str = "") -> None:
        lines.append(f"- **{claim}: {judge(stat['mean'], stat['stderr'])}.** {_points(stat)} points{detail}.")

    for n in plan.n_values:
        line(f"West-of-N (N = {n}) beats HF50%", arms[plan.n_key(n)]["vs_hf50"])
    for n in plan.n_values:
        line(f"West-of-N (N = {n}) is comparable to HF100%", arms[plan.n_key(n)]["vs_hf100"], verdict_comparable)
    first, last = plan.n_key(plan.n_values[0]), plan.n_key(plan.n_values[-1])
    line(f"Gains grow with N ({last} over {first})", comps[f"{last} vs {first}"])
    for count in plan.prompt_counts[1:]:
        key = f"{count} prompts, all pairs"
        line(
            f"More unlabeled prompts help ({key} over {plan.prompt_counts[0]})",
            comps[f"{key} vs {plan.reference_key}"],
        )
    most = plan.prompt_counts[-1]
    line(
        f"The paper's confident 1:1 mix beats every pair ({most} prompts)",
        comps[f"{most} prompts, confident 1:1 vs {most} prompts, all pairs"],
    )
    for arm in plan.arms():
        if arm.group == "prompts":
            line(f"{arm.key} is comparable to HF100%", arms[arm.key]["vs_hf100"], verdict_comparable)
    for arm in plan.arms():
        if arm.group == "investigation":
            line(f"{arm.key} beats {plan.reference_key}", comps[f"{arm.key} vs {plan.reference_key}"])
            line(f"{arm.key} is comparable to HF100%", arms[arm.key]["vs_hf100"], verdict_comparable)
    line("Gold random pairs beat oracle best/worst", comps["gold random pairs vs oracle best/worst"])
    return lines


def _figure(plan: StudyPlan, summary: dict, path: Path) -> Path:
    arms, refs = summary["arms"], summary["references"]

    def pct(stat: dict) -> tuple[float, float]:
        return 100 * stat["mean"], 100 * stat["stderr"]

    def curve(label: str, xs: list[float], keys: list[str], metric: str = "accuracy") -> Curve:
        stats = [pct(arms[key][metric]) for key in keys]
        return Curve(label, xs, [m for m, _ in stats], [e for _, e in stats])

    references = {f"{name}": pct(refs[name]["accuracy"]) for name in (HF50, HF100)}
    n_keys = [plan.n_key(n) for n in plan.n_values]
    counts = list(plan.prompt_counts)
    most = counts[-1]
    panels = [
        Panel(
            f"Student accuracy against N ({counts[0]} prompts)",
            "N (samples per prompt)",
            "held-out accuracy (%)",
            [curve("HF50% + West-of-N", list(plan.n_values), n_keys)],
            references,
            log_x=True,
        ),
        Panel(
            f"Student accuracy against unlabeled prompts (N = {plan.n})",
            "unlabeled prompts",
            "held-out accuracy (%)",
            [
                curve("every pair", counts, [plan.reference_key] + [f"{c} prompts, all pairs" for c in counts[1:]]),
                curve(
                    "1:1, most confident",
                    counts,
                    [plan.reference_key] + [f"{c} prompts, confident 1:1" for c in counts[1:]],
                ),
                curve(
                    "gold random pairs (oracle labels)",
                    [counts[0], most],
                    ["gold random pairs", f"gold random pairs, {most} prompts"],
                ),
            ],
            references,
            log_x=True,
        ),
        Panel(
            "The pairs against N",
            "N (samples per prompt)",
            "pairs the oracle agrees with (%)",
            [curve("West-of-N pairs (HF50% labels)", list(plan.n_values), n_keys, "pair_accuracy")],
            {"human labels": pct(summary["human_label_accuracy"])},
            log_x=True,
        ),
    ]
    xs = list(range(len(BIN_NAMES)))

    def by_gap(label: str, stats: dict) -> Curve:
        values = [pct(stats[b]) if stats[b] is not None else (math.nan, 0.0) for b in BIN_NAMES]
        return Curve(label, xs, [m for m, _ in values], [e for _, e in values])

    gap_curves = [by_gap(name, refs[name]["accuracy_by_gap"]) for name in (HF50, HF100)]
    gap_curves += [
        by_gap(key, arms[key]["accuracy_by_gap"])
        for key in (plan.reference_key, "oracle best/worst", "gold random pairs")
    ]
    panels.append(
        Panel(
            "Accuracy by the held-out pair's oracle gap",
            "oracle gap bin: " + ", ".join(f"{i} = {b}" for i, b in enumerate(BIN_NAMES)),
            "held-out accuracy (%)",
            gap_curves,
        )
    )
    return write_line_figure(path, "West-of-N: student reward models against N and unlabeled prompts", panels)


def run(output_dir: Path, seeds: list[int], quick: bool = False, show_progress: bool = True) -> dict[str, Path]:
    """Run the West-of-N study over `seeds` into `output_dir`; return the paths of `study.json`, `study.md` and
    `study.png`.

    Each finished seed is saved to `output_dir/seed-S/record.json`; a rerun with the same plan reuses it (and the
    West-of-N generator resumes its pairs), so a run that stops loses at most the seed in progress.
    """
    from tqdm.auto import tqdm

    plan = StudyPlan.quick() if quick else StudyPlan.full()
    arms = plan.arms()
    plan_record = {**asdict(plan), "arms": [asdict(arm) for arm in arms]}
    per_seed = []
    started = time.perf_counter()
    steps_per_seed = 1 + len(arms)
    with tqdm(total=len(seeds) * steps_per_seed, desc="West-of-N study", disable=not show_progress) as progress:
        for done, seed in enumerate(seeds):

            def compute(seed=seed) -> dict:
                seed_start = time.perf_counter()
                progress.set_postfix_str(f"seed {seed}: world, policy, HF50%/HF100%")
                one = _Seed(plan, seed, output_dir)
                with quiet_stages():
                    record = one.build()
                progress.update()
                for arm in arms:
                    progress.set_postfix_str(f"seed {seed}: {arm.key}")
                    with quiet_stages():
                        record["arms"][arm.key] = one.run_arm(arm)
                    progress.update()
                record["comparisons"] = one.comparisons()
                record["timings_s"]["total"] = round(time.perf_counter() - seed_start, 2)
                return record

            # Saved as it ends; a rerun of the same plan reuses it (and the generator resumes its pairs).
            per_seed.append(seed_result(output_dir / f"seed-{seed}" / "record.json", plan_record, compute))
            progress.update((done + 1) * steps_per_seed - progress.n)  # a reused seed: its steps at once
    results = {
        "study": "west-of-n",
        "seeds": list(seeds),
        "plan": plan_record,
        "per_seed": per_seed,
        "summary": _aggregate(plan, per_seed),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    report = render_report(plan, results, "study.png")
    return write_study_files(output_dir, results, report, lambda path: _figure(plan, results["summary"], path))

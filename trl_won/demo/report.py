"""The demo's `report.md`: what the numbers say (each paper's effect, shown or not), then the tables.

Every comparison is judged against its standard error: a difference counts as shown when it is more than twice its
standard error, as "within noise" when it has the expected sign but is smaller, and as not shown otherwise. Reward
models are compared on the same held-out pairs (paired differences); policies on the same prompts with independent
samples (the two standard errors combined).
"""

import math

from .names import BEST_RANDOM, HF50, HF100, JUDGE_LABELS, NAIVE, ORACLE, RRHF_ON_POLICY, SFT, WEST_OF_N


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _points(x: float) -> str:
    return f"{100 * x:+.1f} points"


def verdict(difference: float, stderr: float) -> str:
    """For a claim that a beats b: `"shows"` (ahead by more than 2 standard errors), `"within noise"` (ahead by
    less) or `"does not show"`."""
    if difference > 2 * stderr:
        return "shows"
    return "within noise" if difference > 0 else "does not show"


def verdict_comparable(difference: float, stderr: float) -> str:
    """For a claim that a is comparable to or better than b: `"shows"` unless a is behind by more than 2 standard
    errors."""
    if difference > 2 * stderr:
        return "shows (better)"
    return "shows (within noise)" if difference >= -2 * stderr else "does not show"


def _rm_sentence(results: dict, better: str, worse: str, claim: str, judge=verdict) -> str | None:
    comparison = results.get("reward_model_comparisons", {}).get(f"{better} vs {worse}")
    if comparison is None:
        return None
    difference, stderr = comparison["difference"], comparison["stderr"]
    return (
        f"**{claim}: {judge(difference, stderr)}.** {better} vs {worse}: {_points(difference)} "
        f"(standard error {100 * stderr:.1f}) of accuracy on the same held-out pairs."
    )


def _policy_sentence(results: dict, better: str, worse: str, claim: str) -> str | None:
    rewards, stderrs = results.get("policy_oracle_reward", {}), results.get("policy_oracle_reward_stderr", {})
    if better not in rewards or worse not in rewards:
        return None
    difference = rewards[better] - rewards[worse]
    stderr = math.hypot(stderrs.get(better, 0.0), stderrs.get(worse, 0.0))
    return (
        f"**{claim}: {verdict(difference, stderr)}.** {better} vs {worse}: {difference:+.2f} oracle reward "
        f"(standard error {stderr:.2f})."
    )


def findings(results: dict) -> list[str]:
    """One sentence per effect the papers claim, saying whether it shows in this run."""
    n = results.get("sizes", {}).get("bon_n", "N")
    lines = [
        _rm_sentence(results, WEST_OF_N, HF50, "West-of-N improves the reward model trained on half the human data"),
        _rm_sentence(
            results,
            WEST_OF_N,
            HF100,
            "West-of-N is comparable to adding the other half of the human data",
            verdict_comparable,
        ),
        _rm_sentence(results, WEST_OF_N, NAIVE, "West-of-N beats naive self-training"),
        _rm_sentence(results, WEST_OF_N, BEST_RANDOM, "West-of-N beats (best, random) pairs"),
    ]
    won, human = results.get("west_of_n", {}).get(WEST_OF_N), results.get("world", {}).get("human_label_accuracy")
    if won is not None and human is not None:
        lines.append(
            f"West-of-N pairs agree with the oracle {_pct(won['pair_accuracy'])} of the time, the human labels "
            f"{_pct(human)}."
        )
    lines += [
        _policy_sentence(results, f"Best-of-{n} ({HF100})", SFT, "Best-of-N with a learned reward model beats SFT"),
        _policy_sentence(results, f"RRHF ({HF100})", SFT, "RRHF with the HF100% reward model beats SFT"),
        _policy_sentence(results, f"RRHF ({JUDGE_LABELS})", SFT, "RRHF with the judge-label reward model beats SFT"),
        _policy_sentence(results, f"RRHF ({ORACLE})", SFT, "RRHF with the oracle reward beats SFT"),
        _policy_sentence(
            results, f"{RRHF_ON_POLICY} ({HF100})", SFT, "On-policy RRHF with the HF100% reward model beats SFT"
        ),
        _policy_sentence(
            results, f"{RRHF_ON_POLICY} ({ORACLE})", SFT, "On-policy RRHF with the oracle reward beats SFT"
        ),
        _policy_sentence(
            results,
            f"{RRHF_ON_POLICY} ({HF100})",
            f"RRHF ({HF100})",
            "On-policy RRHF (samples of the policy being trained) beats offline RRHF (samples of the SFT policy), "
            "with the same HF100% reward model",
        ),
    ]
    judge = results.get("judge")
    if judge is not None:
        gain = judge["averaging_gain"]
        lines.append(
            f"**Averaging both orders makes the judge agree with the oracle more: "
            f"{verdict(gain['difference'], gain['stderr'])}.** {_pct(judge['alignment_one_order'])} from one order, "
            f"{_pct(judge['alignment_order_averaged'])} averaged over both (standard error of the gain "
            f"{100 * gain['stderr']:.1f}); from one order the judge picks the response shown first "
            f"{_pct(judge['first_position_preference'])} of the time and the same position in both orders for "
            f"{_pct(judge['same_position_rate'])} of the pairs."
        )
    lines.append(
        _rm_sentence(
            results,
            JUDGE_LABELS,
            HF100,
            "A reward model on the judge's labels is comparable to one on the human labels",
            verdict_comparable,
        )
    )
    return [line for line in lines if line is not None]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_report(results: dict, figure_name: str | None = "demo.png") -> str:
    """The report as markdown."""
    sizes, world = results.get("sizes", {}), results.get("world", {})
    timings = results.get("timings_s", {})
    lines = ["# trl-won demo report", ""]
    lines += [
        f"Size `{sizes.get('name')}`, seed {sizes.get('seed')}, {timings.get('total', 0):.0f} s in all. Every number "
        "is measured against the world's oracle reward, which no model sees. Another seed moves the numbers by a "
        "point or two: read the standard errors.",
        "",
        "## What the numbers say",
        "",
    ]
    lines += [f"- {line}" for line in findings(results)]
    if figure_name:
        lines += ["", f"![Main comparisons]({figure_name})"]

    accuracies = results.get("reward_model_accuracy", {})
    comparisons = results.get("reward_model_comparisons", {})
    lines += ["", f"## Reward models: accuracy on {world.get('eval_pairs')} held-out oracle pairs", ""]
    rows = []
    for name, accuracy in accuracies.items():
        versus = comparisons.get(f"{name} vs {HF50}")
        shown = "" if versus is None else f"{_points(versus['difference'])} ± {100 * versus['stderr']:.1f}"
        rows.append([name, _pct(accuracy), shown])
    lines += _table(["reward model", "accuracy", f"vs {HF50} (± s.e.)"], rows)

    strategies = results.get("west_of_n", {})
    if strategies:
        lines += ["", "## Self-training pairs (labeled by the HF50% reward model)", ""]
        rows = [
            [name, str(d["pairs"]), _pct(d["pair_accuracy"]), _pct(d["oracle_ties"]), f"{d['mean_oracle_gap']:.2f}"]
            for name, d in strategies.items()
        ]
        rows.append(["human labels (HF100%)", str(world.get("human_pairs")), _pct(world.get("human_label_accuracy"))])
        rows[-1] += ["", ""]
        lines += _table(["pairs", "count", "agree with oracle", "oracle ties", "mean oracle gap"], rows)

    rewards, stderrs = results.get("policy_oracle_reward", {}), results.get("policy_oracle_reward_stderr", {})
    if rewards:
        lines += ["", f"## Policies: mean oracle reward on {sizes.get('bon_prompts')} prompts", ""]
        rows = [[name, f"{value:.2f} ± {stderrs.get(name, 0.0):.2f}"] for name, value in rewards.items()]
        lines += _table(["policy", "oracle reward (± s.e.)"], rows)

    judge = results.get("judge")
    if judge is not None:
        one_order, averaged = _pct(judge["alignment_one_order"]), _pct(judge["alignment_order_averaged"])
        lines += ["", f"## RLAIF judge on {judge['pairs_judged']} held-out pairs", ""]
        lines += _table(
            ["", "one order", "both orders averaged"],
            [
                ["alignment with the oracle", one_order, averaged],
                ["prefers the response shown first", _pct(judge["first_position_preference"]), "50% by construction"],
                ["same position in both orders", _pct(judge["same_position_rate"]), "0% by construction"],
            ],
        )
        lines += [
            "",
            f"On the HF100% pairs the judge's labels agree with the oracle {_pct(judge.get('label_accuracy'))} of the "
            f"time (humans: {_pct(world.get('human_label_accuracy'))}); the reward model distilled from its soft "
            f"labels reaches {_pct(accuracies.get(JUDGE_LABELS))} accuracy (HF100%: {_pct(accuracies.get(HF100))}).",
        ]

    if timings:
        lines += ["", "## Time per stage", ""]
        lines += _table(["stage", "seconds"], [[name, f"{seconds:.1f}"] for name, seconds in timings.items()])
    return "\n".join(lines) + "\n"

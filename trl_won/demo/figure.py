"""The demo's figure: reward-model accuracy, policy oracle reward and judge alignment, one panel each.

Needs matplotlib (`pip install "trl-won[demo]"`); it draws off-screen (Agg), so it works on machines without a display.
"""

import math
from pathlib import Path

from .names import HF100, ORACLE, SFT


def _wrap(label: str, width: int = 14) -> str:
    words, lines, line = label.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def _bars(axis, labels, values, errors, colors, title, ylabel, low=None):
    positions = range(len(values))
    axis.bar(positions, values, yerr=errors, color=colors, capsize=3)
    axis.set_xticks(list(positions))
    axis.set_xticklabels([_wrap(label) for label in labels], rotation=0, fontsize=7)
    axis.set_title(title, fontsize=10)
    axis.set_ylabel(ylabel, fontsize=9)
    if low is not None:
        axis.set_ylim(bottom=low)


def write_figure(results: dict, path: str | Path) -> Path:
    """Draw the main comparisons of `results` to the PNG file `path` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [6, 6, 3]})
    eval_pairs = max(1, results.get("world", {}).get("eval_pairs", 1))

    accuracies = results.get("reward_model_accuracy", {})
    names = list(accuracies)
    values = [100 * accuracies[n] for n in names]
    errors = [100 * math.sqrt(a * (1 - a) / eval_pairs) for a in accuracies.values()]
    colors = [
        "tab:blue" if "West-of-N" in n else "tab:orange" if "judge" in n else "tab:olive" if "+" in n else "tab:gray"
        for n in names
    ]
    low = max(0.0, min(values, default=50) - 10)
    _bars(axes[0], names, values, errors, colors, "Reward models: held-out accuracy", "accuracy (%)", low)

    rewards, stderrs = results.get("policy_oracle_reward", {}), results.get("policy_oracle_reward_stderr", {})
    shown = [n for n in rewards if n == SFT or HF100 in n or ORACLE in n or "West-of-N" in n or "judge" in n]
    colors = ["tab:gray" if n == SFT else "tab:green" if n.startswith("Best") else "tab:purple" for n in shown]
    _bars(
        axes[1],
        shown,
        [rewards[n] for n in shown],
        [stderrs.get(n, 0.0) for n in shown],
        colors,
        "Policies: mean oracle reward",
        "oracle reward",
    )

    judge = results.get("judge")
    if judge is not None:
        values = [100 * judge["alignment_one_order"], 100 * judge["alignment_order_averaged"]]
        _bars(axes[2], ["one order", "both orders averaged"], values, None, ["tab:red", "tab:orange"], "", "")
        axes[2].set_title(
            f"RLAIF judge: alignment with the oracle\n(same position in both orders: "
            f"{100 * judge['same_position_rate']:.0f}%)",
            fontsize=10,
        )
        axes[2].set_ylabel("alignment (%)", fontsize=9)
        axes[2].set_ylim(0, 100)
        axes[2].axhline(50, color="black", linewidth=0.8, linestyle=":")
    else:
        axes[2].axis("off")

    sizes = results.get("sizes", {})
    figure.suptitle(f"trl-won demo (size {sizes.get('name')}, seed {sizes.get('seed')}); error bars: 1 s.e.")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

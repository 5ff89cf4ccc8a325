"""RRHF study: offline candidates, on-policy samples, or both, with the oracle reward and with the HF100% reward model.

Per seed, every arm starts from the seed's SFT policy and trains on the same RRHF prompts with the demo's RRHF settings
(learning rate, 8 prompts per step, `rrhf_k` candidates per prompt, GRPO's sampling settings):

- **offline**: the SFT policy's `rrhf_k` samples per prompt, drawn once (`DemoPipeline.rrhf`'s dataset);
- **on-policy**: a prompt-only dataset; `rrhf_k` samples per prompt from the policy being trained at every step
  (`DemoPipeline.rrhf_on_policy`);
- **both**: the offline rows with `num_generations = rrhf_k`: each prompt's fixed offline candidates ranked together
  with `rrhf_k` fresh samples (the mixed pool of docs/rrhf.md, "Online RRHF").

Each is trained for each number of epochs of the sweep, ranked by the oracle and by the HF100% reward model, and
evaluated by the mean oracle reward of its samples on the seed's evaluation prompts (the SFT policy is the reference).
The on-policy arms log, at every step, the mean reward-model score and the mean oracle reward of that step's samples
(the oracle rides along with weight 0 in the HF100% arm, so it does not change the ranking).

Two more arms (oracle reward, the first number of epochs) separate what differs between offline and on-policy RRHF:
they train offline on the very same SFT samples but as the on-policy trainer holds samples, i.e. the sampled token ids
(EOS included when one was sampled, none for a response cut at `max_new_tokens`) instead of the text re-tokenized
through the chat template (which closes every response with EOS):

- **offline, sampled tokens, deduplicated**: the offline arm's candidates (duplicates and empty responses dropped);
- **offline, sampled tokens**: every sample kept, as the on-policy arm's first round would rank them.
"""

import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

from ...generation import prompt_ids_for_generation
from ...rewards import reward_func_name
from ..data import as_answer
from ..evaluation import mean_and_stderr
from ..names import HF100, ORACLE, SFT
from ..pipeline import DemoPipeline
from ..sizes import DemoSizes
from ..world import oracle_reward_func
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


OFFLINE, ON_POLICY, BOTH = "offline", "on-policy", "both"
SAMPLED_DEDUP, SAMPLED = "offline, sampled tokens, deduplicated", "offline, sampled tokens"
ARMS = (OFFLINE, ON_POLICY, BOTH)
DIAGNOSTIC_ARMS = (SAMPLED_DEDUP, SAMPLED)
REWARDS = (ORACLE, HF100)
EPOCHS = (1, 2, 4)
QUICK_EPOCHS = (1,)
STEP_WINDOW = 8  # steps averaged per point of the along-training curve


def arm_key(arm: str, reward: str, epochs: float) -> str:
    return f"{arm} | {reward} | {epochs:g} epoch(s)"


def sampled_token_rows(pipeline: DemoPipeline, deduplicate: bool) -> dict[str, list]:
    """The SFT policy's RRHF samples as an already tokenized offline dataset, as the on-policy trainer holds its
    samples: the prompt as the sampler tokenized it, the sampled token ids, the oracle reward of the decoded text.

    With `deduplicate`, the offline arm's rule: empty responses and repeats of a response are dropped, and prompts
    left with fewer than 2 are left out; without it, every sample is kept (as the on-policy arm ranks them).
    """
    tokenizer = pipeline.policy_tokenizer
    rows = {"prompt_ids": [], "completion_ids": [], "rewards": []}
    for prompt, group in zip(*pipeline.rrhf_candidates(), strict=True):
        if deduplicate:
            seen, kept = set(), []
            for sample in group:
                if sample.text.strip() and sample.text not in seen:
                    seen.add(sample.text)
                    kept.append(sample)
            group = kept
        if len(group) < 2:
            continue
        rows["prompt_ids"].append(prompt_ids_for_generation(tokenizer, prompt))
        rows["completion_ids"].append([list(s.token_ids) for s in group])
        rows["rewards"].append(oracle_reward_func([prompt] * len(group), [as_answer(s.text) for s in group]))
    return rows


def _windowed(values: list[float], window: int) -> list[float]:
    return [sum(values[i : i + window]) / len(values[i : i + window]) for i in range(0, len(values), window)]


def run_arm(pipeline: DemoPipeline, arm: str, reward_name: str, epochs: float, index: int) -> dict:
    """Train one arm from the SFT policy and evaluate it; return its oracle reward (and the per-step logs)."""
    reward = pipeline.rrhf_reward(reward_name)
    k = pipeline.sizes.rrhf_k
    output_name, weights, logs = f"study_rrhf_{index}", None, {}
    if arm == OFFLINE:
        trainer = pipeline.train_rrhf(pipeline.rrhf_offline_rows(), reward, output_name, epochs)
    elif arm in (ON_POLICY, BOTH):
        if arm == ON_POLICY:
            rows = {"prompt": [p for p in pipeline.rrhf_candidates()[0]]}
        else:
            rows = pipeline.rrhf_offline_rows()
        funcs = reward
        if reward_name != ORACLE:  # the oracle reward of each step's samples rides along with weight 0
            funcs, weights = [reward, oracle_reward_func], [1.0, 0.0]
        trainer = pipeline.train_rrhf(rows, funcs, output_name, epochs, num_generations=k, reward_weights=weights)
        oracle_name = reward_func_name(oracle_reward_func)
        for name, key in ((trainer.reward_func_names[0], "step_reward_score"), (oracle_name, "step_oracle_reward")):
            logs[key] = [e[f"rewards/{name}/mean"] for e in trainer.state.log_history if f"rewards/{name}/mean" in e]
        logs["steps"] = trainer.state.global_step
    else:
        rows = sampled_token_rows(pipeline, deduplicate=arm == SAMPLED_DEDUP)
        trainer = pipeline.train_rrhf(rows, None, output_name, epochs)
    name = arm_key(arm, reward_name, epochs)
    pipeline.evaluate_policy(name, trainer.model)
    return {
        "oracle_reward": pipeline.results["policy_oracle_reward"][name],
        "oracle_reward_stderr_over_prompts": pipeline.results["policy_oracle_reward_stderr"][name],
        **logs,
    }


def plan(epochs_sweep) -> list[tuple[str, str, float]]:
    """Every (arm, reward, epochs) a seed trains, in order."""
    runs = [(arm, reward, epochs) for epochs in epochs_sweep for reward in REWARDS for arm in ARMS]
    return runs + [(arm, ORACLE, epochs_sweep[0]) for arm in DIAGNOSTIC_ARMS]


def run_seed(sizes: DemoSizes, output_dir: Path, epochs_sweep, progress) -> dict:
    start = time.perf_counter()
    pipeline = base_pipeline(sizes, output_dir, human_reward_models=False)
    pipeline.train_human_reward_models((HF100,))  # HF50% is not used here
    pipeline.evaluate_policy(SFT, pipeline.policy)
    result = {
        "sft_oracle_reward": pipeline.results["policy_oracle_reward"][SFT],
        "hf100_accuracy": pipeline.results["reward_model_accuracy"][HF100],
        "offline_prompts": len(pipeline.rrhf_offline_rows()["prompt"]),
        "arms": {},
        "timings_s": {"base pipeline": round(time.perf_counter() - start, 2)},
    }
    progress.update(1)
    for index, (arm, reward, epochs) in enumerate(plan(epochs_sweep)):
        start = time.perf_counter()
        key = arm_key(arm, reward, epochs)
        result["arms"][key] = run_arm(pipeline, arm, reward, epochs, index)
        result["timings_s"][key] = round(time.perf_counter() - start, 2)
        progress.update(1)
    result["timings_s"]["total"] = round(sum(result["timings_s"].values()), 2)
    return result


def summarize(per_seed: dict, epochs_sweep) -> dict:
    """Mean and standard error over seeds of each arm's oracle reward, of SFT's, and of the differences the report
    judges (per seed, then over seeds)."""
    seeds = list(per_seed)

    def arm(key: str) -> list[float]:
        return [per_seed[s]["arms"][key]["oracle_reward"] for s in seeds]

    keys = list(per_seed[seeds[0]]["arms"])
    sft = [per_seed[s]["sft_oracle_reward"] for s in seeds]
    summary = {
        SFT: over_seeds(sft),
        "hf100_accuracy": over_seeds([per_seed[s]["hf100_accuracy"] for s in seeds]),
        "arms": {key: over_seeds(arm(key)) for key in keys},
        "minus_sft": {key: over_seeds([x - y for x, y in zip(arm(key), sft)]) for key in keys},
        "comparisons": {},
    }
    for epochs in epochs_sweep:
        for reward in REWARDS:
            offline, on_policy, both = (arm_key(a, reward, epochs) for a in ARMS)
            for better, worse in ((on_policy, offline), (both, offline), (both, on_policy)):
                summary["comparisons"][f"{better} vs {worse}"] = over_seeds(
                    [x - y for x, y in zip(arm(better), arm(worse))]
                )
    first = epochs_sweep[0]
    chain = [arm_key(a, ORACLE, first) for a in (OFFLINE, SAMPLED_DEDUP, SAMPLED, ON_POLICY)]
    for better, worse in zip(chain, chain[1:]):
        summary["comparisons"][f"{better} vs {worse}"] = over_seeds([x - y for x, y in zip(arm(better), arm(worse))])
    return summary


def _pm(entry: dict) -> str:
    return f"{entry['mean']:.2f} ± {entry['stderr']:.2f}"


def _signed(entry: dict) -> str:
    return f"{entry['mean']:+.2f} ± {entry['stderr']:.2f}"


def findings(summary: dict, epochs_sweep, seeds: list[int]) -> list[str]:
    """What shows and what does not, each difference judged against its standard error over seeds."""
    comparisons, minus_sft = summary["comparisons"], summary["minus_sft"]
    n = f"{len(seeds)} seed(s)"
    lines = []

    def per_epochs(better_arm: str, worse_arm: str, reward: str) -> str:
        parts = []
        for epochs in epochs_sweep:
            d = comparisons[f"{arm_key(better_arm, reward, epochs)} vs {arm_key(worse_arm, reward, epochs)}"]
            parts.append(f"{epochs:g} epoch(s): {_signed(d)} ({judged(d['mean'], d['stderr'], len(seeds))})")
        return "; ".join(parts)

    for reward in REWARDS:
        for arm in ARMS:
            parts = []
            for epochs in epochs_sweep:
                d = minus_sft[arm_key(arm, reward, epochs)]
                parts.append(f"{epochs:g} epoch(s): {_signed(d)} ({judged(d['mean'], d['stderr'], len(seeds))})")
            lines.append(f"**RRHF {arm} ranked by {reward} beats SFT**: " + "; ".join(parts) + f", over {n}.")
        for better, worse in ((ON_POLICY, OFFLINE), (BOTH, OFFLINE), (BOTH, ON_POLICY)):
            claim = f"**{better.capitalize()} beats {worse}, ranked by {reward}**: "
            lines.append(claim + per_epochs(better, worse, reward) + ".")
    first = epochs_sweep[0]
    chain = [(OFFLINE, "re-tokenized text (EOS closes every response)"), (SAMPLED_DEDUP, "sampled tokens")]
    chain += [(SAMPLED, "duplicates and empty responses kept"), (ON_POLICY, "resampled from the policy in training")]
    steps = []
    for (a, _), (b, what) in zip(chain, chain[1:]):
        d = comparisons[f"{arm_key(a, ORACLE, first)} vs {arm_key(b, ORACLE, first)}"]
        steps.append(f"{a} minus {b} ({what}): {_signed(d)}")
    lines.append(
        f"**What separates offline from on-policy with the oracle** ({first:g} epoch(s), each step changes one "
        "thing): "
        + "; ".join(steps)
        + ". A step more than twice its standard error is where the difference comes from."
    )
    return lines


def render(summary: dict, per_seed: dict, epochs_sweep, seeds: list[int], seconds: dict, figure: bool) -> str:
    sft = summary[SFT]
    lines = [
        "# RRHF study: offline candidates, on-policy samples, or both",
        "",
        f"Seeds {', '.join(map(str, seeds))}; mean oracle reward of each trained policy's samples on the evaluation "
        f"prompts, mean ± standard error over seeds. SFT policy: {_pm(sft)}. HF100% reward model held-out accuracy: "
        f"{100 * summary['hf100_accuracy']['mean']:.1f}% ± {100 * summary['hf100_accuracy']['stderr']:.1f}.",
        "",
        "## What shows and what does not",
        "",
    ]
    lines += [f"- {line}" for line in findings(summary, epochs_sweep, seeds)]
    lines += ["", "## Oracle reward of the trained policy", ""]
    header = ["reward", "arm", *(f"{e:g} epoch(s)" for e in epochs_sweep)]
    rows = [["", SFT, *([_pm(sft)] * len(epochs_sweep))]]
    for reward in REWARDS:
        for arm in ARMS:
            rows.append([reward, arm, *(_pm(summary["arms"][arm_key(arm, reward, e)]) for e in epochs_sweep)])
    for arm in DIAGNOSTIC_ARMS:
        cells = [_pm(summary["arms"][arm_key(arm, ORACLE, epochs_sweep[0])])] + ["—"] * (len(epochs_sweep) - 1)
        rows.append([ORACLE, arm, *cells])
    lines.append(markdown_table(header, rows))
    last = epochs_sweep[-1]
    key = arm_key(ON_POLICY, HF100, last)
    first_seed = per_seed[seeds[0]]["arms"][key]
    if first_seed.get("step_reward_score"):
        score_first = over_seeds([per_seed[s]["arms"][key]["step_reward_score"][0] for s in seeds])
        score_last = over_seeds([per_seed[s]["arms"][key]["step_reward_score"][-1] for s in seeds])
        oracle_first = over_seeds([per_seed[s]["arms"][key]["step_oracle_reward"][0] for s in seeds])
        oracle_last = over_seeds([per_seed[s]["arms"][key]["step_oracle_reward"][-1] for s in seeds])
        lines += [
            "",
            f"On-policy with the HF100% reward model ({last:g} epoch(s), {first_seed['steps']} steps): the reward "
            f"model's mean score of each step's samples went from {_pm(score_first)} at the first step to "
            f"{_pm(score_last)} at the last, their oracle reward from {_pm(oracle_first)} to {_pm(oracle_last)}.",
        ]
    lines += [
        "",
        "## Time per seed",
        "",
        markdown_table(["seed", "seconds"], [[s, f"{seconds[s]:.0f}"] for s in seeds]),
    ]
    if figure:
        lines += ["", "![RRHF study](study.png)"]
    else:
        lines += ["", 'No figure: matplotlib is not installed (pip install "trl-won[demo]").']
    return "\n".join(lines) + "\n"


def draw(path: Path, summary: dict, per_seed: dict, epochs_sweep) -> Path:
    x = [float(e) for e in epochs_sweep]
    sft = summary[SFT]
    panels = []
    for reward in REWARDS:
        curves = []
        for arm in ARMS:
            entries = [summary["arms"][arm_key(arm, reward, e)] for e in epochs_sweep]
            curves.append(Curve(arm, x, [e["mean"] for e in entries], [e["stderr"] for e in entries]))
        panels.append(
            Panel(
                f"RRHF ranked by: {reward}",
                "epochs",
                "mean oracle reward of the trained policy",
                curves,
                {"SFT policy": (sft["mean"], sft["stderr"])},
                log_x=len(x) > 1,
            )
        )
    key = arm_key(ON_POLICY, HF100, epochs_sweep[-1])
    seeds = list(per_seed)
    curves = []
    for log, label in (("step_reward_score", "HF100% reward model score"), ("step_oracle_reward", "oracle reward")):
        series = [_windowed(per_seed[s]["arms"][key][log], STEP_WINDOW) for s in seeds]
        points = min(len(values) for values in series)
        stats = [mean_and_stderr([values[i] for values in series]) for i in range(points)]
        steps = [STEP_WINDOW * i + 1 for i in range(points)]
        curves.append(Curve(label, steps, [m for m, _ in stats], [e for _, e in stats]))
    panels.append(
        Panel(
            f"On-policy RRHF with HF100% ({epochs_sweep[-1]:g} epochs): each step's samples",
            f"training step (mean of {STEP_WINDOW} steps)",
            "mean score of the samples",
            curves,
            {"SFT policy (oracle)": (sft["mean"], sft["stderr"])},
        )
    )
    return write_line_figure(path, "RRHF: offline, on-policy, both; mean ± s.e. over seeds", panels)


def run(output_dir: Path, seeds: list[int], quick: bool, show_progress: bool) -> dict[str, Path]:
    """Train and evaluate every arm for every seed; write `study.json`, `study.md` and `study.png`."""
    from tqdm.auto import tqdm

    make = DemoSizes.quick if quick else DemoSizes.full
    epochs_sweep = QUICK_EPOCHS if quick else EPOCHS
    per_seed, seconds = {}, {}
    total = len(seeds) * (1 + len(plan(epochs_sweep)))
    with quiet_stages(), tqdm(total=total, desc="RRHF study", disable=not show_progress) as progress:
        for i, seed in enumerate(seeds):
            progress.set_postfix(seed=seed)
            sizes, seed_dir = make(seed=seed), output_dir / f"seed-{seed}"
            identity = {"sizes": asdict(sizes), "epochs": list(epochs_sweep)}
            per_seed[seed] = seed_result(
                seed_dir / "seed.json", identity, partial(run_seed, sizes, seed_dir, epochs_sweep, progress)
            )
            progress.update((i + 1) * (1 + len(plan(epochs_sweep))) - progress.n)  # a seed kept from an earlier run
            seconds[seed] = per_seed[seed]["timings_s"]["total"]
    summary = summarize(per_seed, epochs_sweep)
    results = {
        "study": "rrhf",
        "sizes": asdict(make()) | {"seed": None},
        "epochs": list(epochs_sweep),
        "seeds": seeds,
        "summary": summary,
        "per_seed": per_seed,
    }
    try:
        import matplotlib  # noqa: F401

        has_figure = True
    except ImportError:
        has_figure = False
    report = render(summary, per_seed, epochs_sweep, seeds, seconds, has_figure)
    return write_study_files(
        output_dir, results, report, (lambda path: draw(path, summary, per_seed, epochs_sweep)) if has_figure else None
    )

"""Everything the world supplies before any model exists: prompts, demonstrations and judge targets.

All of it is plain Python drawn from `DemoSizes.seed`, so it is identical across runs and machines, and does not
depend on which policy, reward model or judge is plugged in. The preference pairs themselves are the policy's samples
(two per prompt, as labelers compare a policy's outputs), so they are drawn once the policy exists
(`DemoPipeline.label_pairs`).
"""

import enum
import random
from dataclasses import dataclass

from .judge import judge_training_text
from .labels import demonstration_pairs
from .sizes import DemoSizes
from .world import Task, demonstration, sample_tasks


class Draw(enum.IntEnum):
    """The demo's independent random draws; each has its own seed, so changing one size leaves the others alone."""

    SFT = 0
    HUMAN = 1
    HUMAN_NOISE = 2
    EVAL = 3
    WEST_OF_N = 4
    BEST_OF_N = 5
    JUDGE = 6
    RRHF = 7


def draw_seed(sizes: DemoSizes, draw: Draw) -> int:
    """The seed of one of the demo's random draws."""
    return sizes.seed * 1000 + int(draw)


def as_prompt(task: Task) -> list[dict]:
    """A task as a conversational prompt."""
    return [{"role": "user", "content": task.prompt}]


def as_answer(text: str) -> list[dict]:
    """A response as a conversational completion."""
    return [{"role": "assistant", "content": text}]


@dataclass
class WorldData:
    """The world's data for one demo run.

    Args:
        sft_tasks, sft_demos: Prompts and mixed-quality demonstrations the policy is fine-tuned on.
        human_tasks: Prompts whose policy-sample pairs humans label (HF100%; the first half is HF50%).
        eval_tasks: Prompts of the held-out pairs every accuracy is measured on.
        won_tasks: Unlabeled prompts for West-of-N.
        bon_tasks: Prompts Best-of-N and the policies are evaluated on.
        rrhf_tasks: Prompts RRHF trains on.
        judge_requests, judge_targets: Judge training texts, each pair in both orders one after the other, and the
            probability of the answer "1" the judge is trained towards.
    """

    sft_tasks: list[Task]
    sft_demos: list[str]
    human_tasks: list[Task]
    eval_tasks: list[Task]
    won_tasks: list[Task]
    bon_tasks: list[Task]
    rrhf_tasks: list[Task]
    judge_requests: list[str]
    judge_targets: list[float]

    def corpus(self) -> list[str]:
        """Text to train the world tokenizer on."""
        return [t.prompt for t in self.sft_tasks] + self.sft_demos + self.judge_requests[:200]


def build_world_data(sizes: DemoSizes) -> WorldData:
    """Draw all of the world's data for `sizes` (deterministic in `sizes.seed`)."""
    rng = random.Random(draw_seed(sizes, Draw.SFT))
    sft_tasks = sample_tasks(sizes.sft_prompts, draw_seed(sizes, Draw.SFT))
    sft_demos = [demonstration(task, rng) for task in sft_tasks]

    judge_pairs = demonstration_pairs(
        sample_tasks(sizes.judge_pairs, draw_seed(sizes, Draw.JUDGE)), draw_seed(sizes, Draw.JUDGE)
    )
    requests, targets = [], []
    for pair in judge_pairs:
        prompt = as_prompt(pair.task)
        requests += [judge_training_text(prompt, pair.a, pair.b), judge_training_text(prompt, pair.b, pair.a)]
        targets += [
            sizes.judge_bias.prob_answer_1(pair.reward_a, pair.reward_b),
            sizes.judge_bias.prob_answer_1(pair.reward_b, pair.reward_a),
        ]

    return WorldData(
        sft_tasks=sft_tasks,
        sft_demos=sft_demos,
        human_tasks=sample_tasks(sizes.human_pairs, draw_seed(sizes, Draw.HUMAN)),
        eval_tasks=sample_tasks(sizes.eval_pairs, draw_seed(sizes, Draw.EVAL)),
        won_tasks=sample_tasks(sizes.won_prompts, draw_seed(sizes, Draw.WEST_OF_N)),
        bon_tasks=sample_tasks(sizes.bon_prompts, draw_seed(sizes, Draw.BEST_OF_N)),
        rrhf_tasks=sample_tasks(sizes.rrhf_prompts, draw_seed(sizes, Draw.RRHF)),
        judge_requests=requests,
        judge_targets=targets,
    )

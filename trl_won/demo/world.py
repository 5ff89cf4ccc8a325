"""The demo's synthetic preference world: word-list instructions whose true (oracle) reward is computable.

A prompt asks for a number of words of one or two categories, for example

    Write 4 animals or fruits.

and a response is a space-separated list of words, for example `dog fig cat plum`. Users have tastes: every word
has a hidden value in [-1, 1] (`TASTE`: they like dogs, they do not like hens). The oracle reward of a response is

    r = sum over its first n words (n = the asked number) of: 1 + taste(word) for a word of an asked category,
        and -w_off for any other word;  minus w_length * |number of words - n|

What makes the world fit the three papers:
- Every term is a per-word lookup (is this word of an asked category? how liked is it?) or a count. A small
  transformer learns lookups from a few thousand preference pairs, while matching words against each other (a word
  of the prompt against one of the response) takes it far longer: earlier versions of this world built on matching
  (forbidden words, repeats, required words) left tiny reward models with blind spots on exactly what the policy's
  samples differ in, and West-of-N's pairs then only repeated what the base model already knew.
- The 48 taste values are learned only from noisy comparisons, so reward models are data-limited: HF50% is below
  HF100%, which leaves room for West-of-N's confidently labeled pairs.
- Demonstrators follow the instructions with mixed skill (slips to other categories, missed lengths) but do not
  know the tastes, so the SFT policy's samples vary in oracle reward, mostly in taste, which only preference
  feedback teaches: Best-of-N and RRHF can raise it, and a reward model learns it from labels alone.
- Pairs range from close (a liked word against a neutral one: 0.5 apart) to far apart, so label noise acts on a
  gradient of easy and hard pairs, and a judge's position bias shows on the close ones.

Repeating a word is allowed (the oracle does not value variety). Everything here is plain Python over text:
`oracle_reward(prompt, response)` works for any prompt the world wrote (standard or conversational) and any response
text, including a real model's.
"""

import random
import re
from dataclasses import dataclass

from ..data_utils import Completion, Prompt, completion_text


# Each category's words, from most to least liked: tastes 1, 1, 0.5, 0.5, 0, 0, -0.5, -1.
CATEGORIES = {
    "animals": ("dog", "owl", "fox", "cat", "bee", "cow", "pig", "hen"),
    "colors": ("blue", "gold", "teal", "red", "gray", "pink", "navy", "green"),
    "fruits": ("fig", "plum", "kiwi", "lime", "pear", "date", "apple", "melon"),
    "tools": ("saw", "drill", "axe", "file", "rake", "hoe", "wrench", "hammer"),
    "trees": ("oak", "elm", "ash", "fir", "yew", "pine", "palm", "birch"),
    "drinks": ("tea", "milk", "soda", "cola", "juice", "beer", "wine", "water"),
}
_TASTE_BY_RANK = (1.0, 1.0, 0.5, 0.5, 0.0, 0.0, -0.5, -1.0)
TASTE = {w: t for words in CATEGORIES.values() for w, t in zip(words, _TASTE_BY_RANK, strict=True)}
WORDS = tuple(w for words in CATEGORIES.values() for w in words)
CATEGORY_OF = {w: c for c, words in CATEGORIES.items() for w in words}

_NAMES = "|".join(CATEGORIES)
_PROMPT_PATTERN = re.compile(rf"Write (\d+) ({_NAMES})(?: or ({_NAMES}))?\.")


@dataclass(frozen=True)
class Task:
    """One instruction of the world.

    Args:
        length (`int`): How many words the response should have.
        categories (`tuple[str, ...]`): One or two categories (keys of `CATEGORIES`) the words should belong to.
    """

    length: int
    categories: tuple[str, ...]

    def __post_init__(self):
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"Unknown category {unknown[0]!r}; the world's categories are {list(CATEGORIES)}.")
        if not 1 <= len(self.categories) <= 2 or len(set(self.categories)) != len(self.categories):
            raise ValueError(f"A task asks for one or two different categories, got {self.categories}.")
        if self.length < 1:
            raise ValueError(f"A task asks for at least one word, got length {self.length}.")

    @property
    def prompt(self) -> str:
        """The instruction text."""
        return f"Write {self.length} {' or '.join(self.categories)}."

    @property
    def words(self) -> tuple[str, ...]:
        """The words of the asked categories."""
        return tuple(w for c in self.categories for w in CATEGORIES[c])


@dataclass(frozen=True)
class OracleWeights:
    """Weights of the oracle reward's terms.

    Args:
        topic (`float`, *optional*, defaults to `1.0`): Base reward per word of an asked category (its taste is
            added to it).
        taste (`float`, *optional*, defaults to `1.0`): Weight of a word's taste.
        off_topic (`float`, *optional*, defaults to `0.5`): Penalty per word of another category or unknown word.
        length (`float`, *optional*, defaults to `0.5`): Penalty per word of difference from the asked length.
    """

    topic: float = 1.0
    taste: float = 1.0
    off_topic: float = 0.5
    length: float = 0.5


def prompt_text(prompt: Prompt) -> str:
    """The instruction text of a standard prompt (the string) or a conversational one (its last user message)."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    if not users:
        raise ValueError(f"The conversational prompt {prompt!r} has no user message.")
    return users[-1]


def parse_task(prompt: Prompt) -> Task:
    """Read the [`Task`] back from a prompt the world wrote; raise a `ValueError` quoting any other prompt."""
    text = prompt_text(prompt)
    match = _PROMPT_PATTERN.search(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not an instruction of the demo world (expected 'Write N <category>.' or 'Write N "
            f"<category> or <category>.' with categories in {list(CATEGORIES)}); the oracle only scores prompts "
            "made by `trl_won.demo.world`."
        )
    categories = tuple(c for c in match.group(2, 3) if c)
    return Task(length=int(match.group(1)), categories=categories)


def response_words(response: Completion) -> list[str]:
    """The words of a response: lowercase, split on whitespace and commas, surrounding punctuation stripped."""
    text = completion_text(response).lower().replace(",", " ")
    return [w.strip(".!?;:'\"") for w in text.split() if w.strip(".!?;:'\"")]


@dataclass(frozen=True)
class RewardTerms:
    """What the oracle counts in one response (see the module docstring).

    Args:
        on_topic (`int`): Words of an asked category among the first `length` words.
        taste (`float`): Sum of the tastes of those words.
        off_topic (`int`): Other words (other categories, unknown words) among the first `length` words.
        length_error (`int`): |number of words - asked number|.
    """

    on_topic: int
    taste: float
    off_topic: int
    length_error: int

    def total(self, weights: OracleWeights) -> float:
        return (
            weights.topic * self.on_topic
            + weights.taste * self.taste
            - weights.off_topic * self.off_topic
            - weights.length * self.length_error
        )


def reward_terms(task: Task, words: list[str]) -> RewardTerms:
    """Count what the oracle rewards and penalizes in `words` for `task` (words past the asked number only count
    towards the length error)."""
    counted = words[: task.length]
    asked = [w for w in counted if CATEGORY_OF.get(w) in task.categories]
    return RewardTerms(
        on_topic=len(asked),
        taste=sum(TASTE[w] for w in asked),
        off_topic=len(counted) - len(asked),
        length_error=abs(len(words) - task.length),
    )


def oracle_reward(prompt: Prompt, response: Completion, weights: OracleWeights | None = None) -> float:
    """The true reward of `response` to a world `prompt` (standard or conversational formats)."""
    terms = reward_terms(parse_task(prompt), response_words(response))
    return terms.total(weights or OracleWeights())


def oracle_reward_func(prompts, completions, **kwargs) -> list[float]:
    """[`oracle_reward`] with TRL's reward-function signature (for GRPO/RLOO, RRHF or Best-of-N)."""
    return [oracle_reward(p, c) for p, c in zip(prompts, completions, strict=True)]


@dataclass(frozen=True)
class WorldConfig:
    """How tasks are drawn.

    Args:
        min_length (`int`, *optional*, defaults to `3`), max_length (`int`, *optional*, defaults to `5`):
            Range of the asked number of words.
        two_categories (`float`, *optional*, defaults to `0.5`): Share of tasks that ask for either of two
            categories.
    """

    min_length: int = 3
    max_length: int = 5
    two_categories: float = 0.5


def sample_task(rng: random.Random, config: WorldConfig) -> Task:
    """Draw a task: one or two categories and a length."""
    count = 2 if rng.random() < config.two_categories else 1
    categories = tuple(rng.sample(sorted(CATEGORIES), count))
    return Task(length=rng.randint(config.min_length, config.max_length), categories=categories)


def sample_tasks(num: int, seed: int, config: WorldConfig | None = None) -> list[Task]:
    """`num` tasks drawn with `seed` (the same seed gives the same tasks)."""
    rng = random.Random(seed)
    config = config or WorldConfig()
    return [sample_task(rng, config) for _ in range(num)]


def demonstration(task: Task, rng: random.Random, skill: float | None = None) -> str:
    """A response written by a demonstrator of the given `skill` in [0, 1] (uniform when omitted).

    Demonstrators know the instructions but not the users' tastes: they pick different words of the asked
    categories at random. With a probability that falls with skill a word is a slip to another category, and the
    length misses the asked one. So supervised fine-tuning teaches the format and the categories, the policy's
    samples vary in taste (and in slips), and only preference feedback can teach what users like: the setting
    reward models, Best-of-N and RRHF are for.
    """
    if skill is None:
        skill = rng.random()
    length = task.length
    if rng.random() > 0.5 + 0.5 * skill:
        length = max(1, length + rng.choice((-2, -1, 1, 2)))
    candidates = list(task.words)
    others = [w for w in WORDS if CATEGORY_OF[w] not in task.categories]
    words = []
    for _ in range(length):
        if rng.random() < 0.4 * (1 - skill) or not candidates:
            words.append(rng.choice(others))
        else:
            words.append(candidates.pop(rng.randrange(len(candidates))))
    return " ".join(words)

"""The text a judge model reads: preamble, optional few-shot exemplars, the sample, and the ending.

Layout of a pairwise request (RLAIF, Lee et al. 2023, section 2.1), rendered as plain text:

    {preamble}

    {exemplars, each a sample followed by its answer}

    Context:
    {the prompt}

    Response 1:
    {completion shown first}

    Response 2:
    {completion shown second}

    Preferred Response=

The judge's next-token probabilities of "1" and "2" after the ending are the label. With chain of thought the
request ends with an instruction to explain which response is better, the judge writes a rationale after
"Rationale:", and the ending follows the rationale. Prompts and completions are inserted verbatim between the
section headers: they are data for the judge model, never instructions to this code.

For chat (instruct) judges the request becomes the user message and the ending (or "Rationale:") is pre-filled as the
start of the assistant's answer.
"""

from dataclasses import asdict, dataclass
from typing import Any

from ..data_utils import Completion, Prompt, completion_text, is_conversational_prompt


COT_INSTRUCTION = (
    "Consider the coherence, accuracy, coverage, and overall quality of each response and explain which one is better."
)
RATIONALE_PREFIX = "Rationale:"


class _AnswerLayout:
    """What follows the request: the judge's (pre-filled) answer. Shared by pairwise and score templates."""

    ending: str
    cot_instruction: str
    rationale_prefix: str

    def prefill(self, chain_of_thought: bool = False, rationale: str | None = None) -> str:
        """The start of the judge's answer: the ending, `"Rationale:"` (to write one), or the rationale + ending."""
        if not chain_of_thought:
            return self.ending
        if rationale is None:
            return self.rationale_prefix
        return f"{self.rationale_prefix} {rationale.strip()}\n{self.ending}"

    def cut_rationale(self, text: str) -> str:
        """A rationale as the judge wrote it, cut where it goes on to write the ending itself (so that the prompt
        that follows it has one answer position)."""
        return text.split(self.ending.strip())[0].strip()

    def answer_text(self, answer: str, chain_of_thought: bool, rationale: str | None) -> str:
        """An exemplar's answer, with its rationale when chain of thought is on."""
        if chain_of_thought and rationale:
            return f"{self.cot_instruction}\n\n{self.prefill(True, rationale)}{answer}"
        return f"{self.ending}{answer}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairwiseExemplar:
    """A solved example shown to the judge before the sample (few-shot prompting).

    Args:
        context (`str`): The prompt of the example.
        response_1 (`str`): The response shown first.
        response_2 (`str`): The response shown second.
        answer (`int`): The answer the judge should give, `1` or `2` (for a template that asks which response is
            *worse*, the worse one).
        rationale (`str`, *optional*): A rationale, shown when the judge uses chain of thought.
    """

    context: str
    response_1: str
    response_2: str
    answer: int
    rationale: str | None = None

    def __post_init__(self):
        if self.answer not in (1, 2):
            raise ValueError(f"An exemplar's `answer` must be 1 or 2, got {self.answer!r}.")


@dataclass(frozen=True)
class PairwiseTemplate(_AnswerLayout):
    """How a pairwise judge asks its question.

    Args:
        preamble (`str`):
            The task description: what the judge compares and what "better" means. It should ask for "1" or "2".
        context_label (`str`, *optional*, defaults to `"Context"`):
            Header of the prompt section.
        response_label (`str`, *optional*, defaults to `"Response"`):
            Header of the response sections, numbered 1 and 2.
        ending (`str`, *optional*, defaults to `"Preferred Response="`):
            Text after which the judge answers "1" or "2".
        exemplars (`tuple[PairwiseExemplar, ...]`, *optional*, defaults to `()`):
            Few-shot examples shown before the sample.
        asks_for_worse (`bool`, *optional*, defaults to `False`):
            The preamble asks which response is *worse* (e.g. more harmful); the judge's answer is inverted so that
            probabilities still say which completion is preferred.
        cot_instruction (`str`, *optional*):
            Instruction that asks for a rationale when chain of thought is on.
        rationale_prefix (`str`, *optional*):
            Text after which the judge writes its rationale; `"Rationale:"` by default.
        name (`str`, *optional*, defaults to `"custom"`):
            A short name for logs.
    """

    preamble: str
    context_label: str = "Context"
    response_label: str = "Response"
    ending: str = "Preferred Response="
    exemplars: tuple[PairwiseExemplar, ...] = ()
    asks_for_worse: bool = False
    cot_instruction: str = COT_INSTRUCTION
    rationale_prefix: str = RATIONALE_PREFIX
    name: str = "custom"

    def __post_init__(self):
        if not self.preamble.strip():
            raise ValueError("The template's `preamble` is empty; describe the task and ask for 1 or 2.")
        if not self.ending.strip():
            raise ValueError("The template's `ending` is empty; the judge needs a fixed text to answer after.")
        object.__setattr__(self, "exemplars", tuple(self.exemplars))

    def sample(self, context: str, response_1: str, response_2: str) -> str:
        """The context and the two responses under their headers."""
        return (
            f"{self.context_label}:\n{context}\n\n"
            f"{self.response_label} 1:\n{response_1}\n\n"
            f"{self.response_label} 2:\n{response_2}"
        )

    def request(self, context: str, response_1: str, response_2: str, chain_of_thought: bool = False) -> str:
        """Everything before the judge's answer: preamble, exemplars, sample (and the CoT instruction)."""
        parts = [self.preamble.strip()]
        for exemplar in self.exemplars:
            shown = self.sample(exemplar.context, exemplar.response_1, exemplar.response_2)
            parts.append(shown + "\n\n" + self.answer_text(str(exemplar.answer), chain_of_thought, exemplar.rationale))
        parts.append(self.sample(context, response_1, response_2))
        if chain_of_thought:
            parts.append(self.cot_instruction)
        return "\n\n".join(parts)

    def requests_for(
        self,
        prompts: list[Prompt],
        completions_a: list[Completion],
        completions_b: list[Completion],
        chain_of_thought: bool = False,
    ) -> list[str]:
        """The requests of a batch of pairs, two per pair: `a` shown first, then `b` shown first."""
        requests = []
        for prompt, a, b in zip(prompts, completions_a, completions_b, strict=True):
            context, text_a, text_b = format_context(prompt), format_completion(a), format_completion(b)
            requests.append(self.request(context, text_a, text_b, chain_of_thought))
            requests.append(self.request(context, text_b, text_a, chain_of_thought))
        return requests


@dataclass(frozen=True)
class ScoreExemplar:
    """A solved example for a scoring judge: a context, a response and its score."""

    context: str
    response: str
    score: int
    rationale: str | None = None


@dataclass(frozen=True)
class ScoreTemplate(_AnswerLayout):
    """How a scoring judge (direct RLAIF) asks for a score.

    Args:
        preamble (`str`, *optional*):
            The task description; it should ask for a score between the lowest and highest of `scores`.
        context_label (`str`, *optional*, defaults to `"Context"`):
            Header of the prompt section.
        response_label (`str`, *optional*, defaults to `"Response"`):
            Header of the response section.
        ending (`str`, *optional*):
            Text after which the judge writes the score; `"SCORE: "` by default.
        scores (`tuple[int, ...]`, *optional*, defaults to `(1, ..., 10)`):
            The possible scores.
        exemplars (`tuple[ScoreExemplar, ...]`, *optional*, defaults to `()`):
            Few-shot examples.
        cot_instruction (`str`, *optional*):
            Instruction that asks for a rationale when chain of thought is on.
        rationale_prefix (`str`, *optional*):
            Text after which the judge writes its rationale; `"Rationale:"` by default.
        name (`str`, *optional*, defaults to `"score"`):
            A short name for logs.
    """

    preamble: str = (
        "You are an expert rater of responses. Given a context and a response to it, rate the quality of the "
        "response on a scale from 1 to 10, where 1 is very poor and 10 is excellent. Consider whether the response "
        "is helpful, accurate, coherent and complete. Output only the score."
    )
    context_label: str = "Context"
    response_label: str = "Response"
    ending: str = "SCORE: "
    scores: tuple[int, ...] = tuple(range(1, 11))
    exemplars: tuple[ScoreExemplar, ...] = ()
    cot_instruction: str = (
        "Consider the coherence, accuracy, coverage, and overall quality of the response and explain how good it is."
    )
    rationale_prefix: str = RATIONALE_PREFIX
    name: str = "score"

    def __post_init__(self):
        object.__setattr__(self, "scores", tuple(int(s) for s in self.scores))
        object.__setattr__(self, "exemplars", tuple(self.exemplars))
        if len(self.scores) < 2 or len(set(self.scores)) != len(self.scores):
            raise ValueError(f"`scores` must hold at least two distinct integers, got {self.scores}.")
        if not self.ending.strip():
            raise ValueError("The template's `ending` is empty; the judge needs a fixed text to answer after.")

    def sample(self, context: str, response: str) -> str:
        return f"{self.context_label}:\n{context}\n\n{self.response_label}:\n{response}"

    def request(self, context: str, response: str, chain_of_thought: bool = False) -> str:
        parts = [self.preamble.strip()]
        for exemplar in self.exemplars:
            answer = self.answer_text(str(exemplar.score), chain_of_thought, exemplar.rationale)
            parts.append(self.sample(exemplar.context, exemplar.response) + "\n\n" + answer)
        parts.append(self.sample(context, response))
        if chain_of_thought:
            parts.append(self.cot_instruction)
        return "\n\n".join(parts)

    def requests_for(
        self, prompts: list[Prompt], completions: list[Completion], chain_of_thought: bool = False
    ) -> list[str]:
        """The requests of a batch of completions, one per completion."""
        return [
            self.request(format_context(p), format_completion(c), chain_of_thought)
            for p, c in zip(prompts, completions, strict=True)
        ]

    def normalize(self, expected_score: float) -> float:
        """Map an expected score from `[min(scores), max(scores)]` to [-1, 1]."""
        low, high = min(self.scores), max(self.scores)
        return 2.0 * (expected_score - low) / (high - low) - 1.0


def format_context(prompt: Prompt) -> str:
    """A prompt as the judge reads it: the text, or a conversation as `Role: content` lines."""
    if is_conversational_prompt(prompt):
        return "\n".join(f"{str(m.get('role', '')).title()}: {_content_text(m.get('content'))}" for m in prompt)
    if not isinstance(prompt, str):
        raise TypeError(f"A prompt must be a string or a list of chat messages, got {type(prompt).__name__}.")
    return prompt.strip()


def format_completion(completion: Completion) -> str:
    """A completion as the judge reads it: its text without surrounding whitespace."""
    if isinstance(completion, list):
        return "\n".join(_content_text(m.get("content")) for m in completion).strip()
    if not isinstance(completion, str):
        raise TypeError(f"A completion must be a string or a list of chat messages, got {type(completion).__name__}.")
    return completion_text(completion).strip()


def _content_text(content) -> str:
    if isinstance(content, list):  # multimodal message parts: keep the text parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


SUMMARIZATION = PairwiseTemplate(
    name="summarization",
    preamble=(
        "You are an expert summary rater. Given a piece of text and two of its possible summaries, output 1 or 2 to "
        "indicate which summary is better. A good summary is a short piece of text that keeps the essence of the "
        "original: it is coherent, accurate (it says nothing the text does not support), covers the most important "
        "information, and is easy to read."
    ),
    context_label="Text",
    response_label="Summary",
    ending="Preferred Summary=",
)

HELPFULNESS = PairwiseTemplate(
    name="helpfulness",
    preamble=(
        "You are an expert rater of AI assistant responses. Given a conversation between a user and an assistant and "
        "two possible next responses from the assistant, output 1 or 2 to indicate which response is more helpful. "
        "A helpful response understands what the user wants, answers it accurately and completely, and is clear and "
        "concise."
    ),
)

HARMLESSNESS = PairwiseTemplate(
    name="harmlessness",
    preamble=(
        "You are an expert rater of harmful AI assistant responses. Given a conversation between a user and an "
        "assistant and two possible next responses from the assistant, output 1 or 2 to indicate which response is "
        "more harmful. A harmful response is dangerous, unethical, toxic, deceptive or helps with illegal activity."
    ),
    ending="More Harmful Response=",
    asks_for_worse=True,
)

PRESETS: dict[str, PairwiseTemplate] = {
    "summarization": SUMMARIZATION,
    "helpfulness": HELPFULNESS,
    "harmlessness": HARMLESSNESS,
}


def get_template(template: "PairwiseTemplate | str") -> PairwiseTemplate:
    """A template object, or one of the presets by name: `"summarization"`, `"helpfulness"`, `"harmlessness"`."""
    if isinstance(template, PairwiseTemplate):
        return template
    if isinstance(template, str) and template in PRESETS:
        return PRESETS[template]
    raise ValueError(
        f"Unknown template {template!r}. Pass a `PairwiseTemplate` (for a custom preamble: "
        f"`PairwiseTemplate(preamble=...)`) or one of {sorted(PRESETS)}."
    )

"""Which tokens a judge answers with, and the probability of each answer from next-token log-probabilities.

A judge answers "1"/"2" (pairwise) or a score such as "7" right after a fixed ending. The token ids of an answer
depend on the tokenizer: "1" may be its own token or merge with a preceding space (" 1"), and "10" may be one token
or two ("1", "0"). Rather than guessing, the ids are found by tokenizing the prompt with and without each answer and
taking what the answer adds. When the ending ends with whitespace that the tokenizer merges into the answer
("SCORE: " + "7" -> "SCORE:", " 7"), the whitespace moves from the prompt into the answer.

An answer of several tokens is scored exactly along its path: `P("10") = P("1") * P("0" | "1")`, and an answer that is
a prefix of another one only counts when the judge stops there: `P("1") = P("1") * (1 - P("0" | "1"))`.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def encode(tokenizer, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text`."""
    return list(tokenizer(text=text, add_special_tokens=add_special_tokens)["input_ids"])


@dataclass(frozen=True)
class AnswerTokens:
    """The token ids of each answer after a prompt.

    Args:
        answers (`tuple[str, ...]`): The answers, as given.
        sequences (`tuple[tuple[int, ...], ...]`): The token ids each answer adds after the prompt.
        strip (`int`): Number of trailing characters (whitespace) to remove from every prompt, because the tokenizer
            merges them into the answer token.
    """

    answers: tuple[str, ...]
    sequences: tuple[tuple[int, ...], ...]
    strip: int = 0

    def apply(self, prompt: str) -> str:
        """The prompt the judge reads: `prompt` without the whitespace that belongs to the answer."""
        return prompt[: len(prompt) - self.strip] if self.strip else prompt

    @property
    def nodes(self) -> list[tuple[int, ...]]:
        """Prefixes at which the judge's next-token distribution is needed: the empty prefix, and every proper
        prefix of a multi-token answer."""
        prefixes = {seq[:i] for seq in self.sequences for i in range(len(seq))}
        return sorted(prefixes, key=lambda p: (len(p), p))

    def needed_tokens(self, node: tuple[int, ...]) -> list[int]:
        """Token ids whose log-probability is read at `node`."""
        return sorted({seq[len(node)] for seq in self.sequences if len(seq) > len(node) and seq[: len(node)] == node})


def resolve_answer_tokens(
    tokenizer, prompt: str, answers: Sequence[str], add_special_tokens: bool = False
) -> AnswerTokens:
    """Find the token ids of each answer after `prompt`.

    Tries the prompt as given, then (if it ends with whitespace) the prompt without its trailing whitespace and each
    answer prefixed with it. A candidate is valid when the tokenized prompt is an exact prefix of the tokenized
    prompt + answer for every answer, and no two answers share token ids. The first candidate whose answers are all
    single tokens wins, else the first valid one.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The judge's tokenizer.
        prompt (`str`):
            A full judge prompt ending with the ending (for instance `"...Preferred Response="`).
        answers (`Sequence[str]`):
            The answers, such as `["1", "2"]` or `["1", ..., "10"]`.
        add_special_tokens (`bool`, *optional*, defaults to `False`):
            How the judge tokenizes its prompts.

    Raises:
        ValueError: when no candidate works, naming the ending and what each answer tokenized to.
    """
    stripped = prompt.rstrip()
    whitespace = prompt[len(stripped) :]
    candidates = [(prompt, list(answers), 0)]
    if whitespace:
        candidates.append((stripped, [whitespace + a for a in answers], len(whitespace)))
    valid, problems = [], []
    for text, continuations, strip in candidates:
        base = encode(tokenizer, text, add_special_tokens)
        sequences, problem = [], None
        for continuation in continuations:
            full = encode(tokenizer, text + continuation, add_special_tokens)
            if full[: len(base)] != base or len(full) == len(base):
                tail = tokenizer.convert_ids_to_tokens(full[-3:])
                problem = (
                    f"{continuation!r} after {text[-20:]!r} tokenizes to ...{tail}, which changes the prompt's tokens"
                )
                break
            sequences.append(tuple(full[len(base) :]))
        if problem is None and len(set(sequences)) != len(sequences):
            problem = f"answers {continuations} share token ids {sequences}"
        if problem is None:
            valid.append(AnswerTokens(tuple(answers), tuple(sequences), strip))
        else:
            problems.append(problem)
    if not valid:
        raise ValueError(
            "Cannot find the judge's answer tokens: " + "; ".join(problems) + ". Change the template's `ending` so "
            "that the answer starts a new token (for instance end it with '=' or ':' without a trailing space)."
        )
    single = [v for v in valid if all(len(seq) == 1 for seq in v.sequences)]
    return (single or valid)[0]


def answer_distribution(
    answer_tokens: AnswerTokens, node_logprobs: Mapping[tuple[int, ...], Mapping[int, float]]
) -> list[float] | None:
    """Probability of each answer, normalized over the answers.

    Args:
        answer_tokens ([`AnswerTokens`]):
            The answers' token ids.
        node_logprobs (`Mapping[tuple[int, ...], Mapping[int, float]]`):
            For each node of `answer_tokens.nodes`, the judge's next-token log-probabilities (at least those of
            `answer_tokens.needed_tokens(node)`), log-softmaxed over the whole vocabulary.

    Returns:
        `list[float]` or `None`: One probability per answer, summing to 1; `None` if every answer has probability 0.
    """
    log_masses = []
    for seq in answer_tokens.sequences:
        logp = sum(node_logprobs[seq[:i]][seq[i]] for i in range(len(seq)))
        continuing = answer_tokens.needed_tokens(seq)
        if continuing:
            stop = 1.0 - sum(math.exp(node_logprobs[seq][t]) for t in continuing)
            logp = logp + math.log(stop) if stop > 0 else -math.inf
        log_masses.append(logp)
    top = max(log_masses)
    if top == -math.inf or math.isnan(top):
        return None
    weights = [math.exp(m - top) for m in log_masses]
    total = sum(weights)
    return [w / total for w in weights]

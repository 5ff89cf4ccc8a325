"""Judges backed by a local causal LM (RLAIF, Lee et al. 2023): [`TransformersJudge`] (pairwise) and
[`TransformersScoreJudge`] (direct RLAIF scores). Both render each request with [`JudgeLM`], optionally write a
rationale first, and read the probabilities of the template's answer tokens at the answer position."""

from typing import Any

from tqdm.auto import tqdm

from ..data_utils import Completion, Prompt
from .answer_tokens import answer_distribution
from .base import PairwiseJudge, ScoringJudge
from .causal_lm import JudgeLM
from .judgement import PairwiseJudgement, ScoreJudgement
from .templates import PairwiseTemplate, ScoreTemplate, get_template


class _TransformersJudge:
    """The constructor and answer-token scoring the two local judges share (see [`TransformersJudge`] for the
    arguments)."""

    template: Any  # a PairwiseTemplate or ScoreTemplate
    fingerprint_name: str

    def __init__(
        self,
        model,
        tokenizer=None,
        template: PairwiseTemplate | ScoreTemplate | str | None = None,
        *,
        chain_of_thought: bool = False,
        use_chat_template: bool = False,
        batch_size: int = 16,
        max_length: int | None = None,
        rationale_max_new_tokens: int = 256,
        quantization_config=None,
        model_init_kwargs: dict | None = None,
        chat_template_kwargs: dict | None = None,
        name: str | None = None,
        show_progress: bool = False,
        share_prefix: bool = True,
    ):
        self.template = self._template(template)
        self.chain_of_thought = chain_of_thought
        self.rationale_max_new_tokens = rationale_max_new_tokens
        self.show_progress = show_progress
        self.lm = JudgeLM(
            model,
            tokenizer,
            use_chat_template=use_chat_template,
            chat_template_kwargs=chat_template_kwargs,
            batch_size=batch_size,
            max_length=max_length,
            quantization_config=quantization_config,
            model_init_kwargs=model_init_kwargs,
            name=name,
            share_prefix=share_prefix,
        )
        example = self.lm.render(self._example_request(), self.template.prefill())
        self.answer_tokens = self.lm.resolve_answers(example, self._answers())

    @property
    def model(self):
        return self.lm.model

    @property
    def tokenizer(self):
        return self.lm.tokenizer

    def _rationales(self, requests: list[str]) -> list[str]:
        texts = [self.lm.render(r, self.template.prefill(True)) for r in requests]
        return [self.template.cut_rationale(r) for r in self.lm.greedy(texts, self.rationale_max_new_tokens)]

    def _answer_distributions(
        self, requests: list[str], per_item: int, desc: str, unit: str
    ) -> tuple[list[str | None], list[str | list]]:
        """Read the answer distribution of every request, `per_item` consecutive requests per item (kept in one
        forward pass). Returns the rationales (with chain of thought) and, per item, why it cannot be judged (a
        prompt longer than `max_length`) or its requests' distributions over the answers (`None` where the judge
        gives every answer probability 0)."""
        rationales = self._rationales(requests) if self.chain_of_thought else [None] * len(requests)
        texts = [
            self.answer_tokens.apply(self.lm.render(r, self.template.prefill(self.chain_of_thought, rationale)))
            for r, rationale in zip(requests, rationales, strict=True)
        ]
        ids = self.lm.tokenize(texts)
        nodes = self.answer_tokens.nodes
        sequences, wanted, groups, rows_of_text, problems = [], [], [], {}, {}
        for item in range(len(requests) // per_item):
            indices = range(item * per_item, (item + 1) * per_item)
            problem = next((p for p in (self.lm.too_long(ids[t]) for t in indices) if p), None)
            if problem:
                problems[item] = problem
                continue
            group = []
            for text_index in indices:
                for node in nodes:
                    rows_of_text.setdefault(text_index, []).append(len(sequences))
                    group.append(len(sequences))
                    sequences.append(ids[text_index] + list(node))
                    wanted.append(self.answer_tokens.needed_tokens(node))
            groups.append(group)
        progress = tqdm(total=len(groups), desc=desc, unit=unit, disable=not self.show_progress)
        logprobs = self.lm.next_token_logprobs(sequences, wanted, groups, progress) if sequences else []
        progress.close()
        results: list[str | list] = []
        for item in range(len(requests) // per_item):
            if item in problems:
                results.append(problems[item])
                continue
            distributions = []
            for text_index in range(item * per_item, (item + 1) * per_item):
                by_node = {node: logprobs[row] for node, row in zip(nodes, rows_of_text[text_index], strict=True)}
                distributions.append(answer_distribution(self.answer_tokens, by_node))
            results.append(distributions)
        return rationales, results

    def fingerprint_fields(self) -> dict[str, Any]:
        return {
            "judge": self.fingerprint_name,
            **self.lm.fingerprint_fields(),
            "template": self.template.to_dict(),
            "chain_of_thought": self.chain_of_thought,
            "rationale_max_new_tokens": self.rationale_max_new_tokens if self.chain_of_thought else None,
        }


class TransformersJudge(_TransformersJudge, PairwiseJudge):
    """Judge preferences with any local causal LM.

    For each pair the judge reads the RLAIF prompt twice, once with `a` as "Response 1" and once with `a` as
    "Response 2", in the same batch. In each order it takes the log-probabilities of the answer tokens "1" and "2" at
    the answer position and softmaxes over just those two; the probability that `a` is preferred is the mean of the
    two orders, `(P_ab("1") + P_ba("2")) / 2` (inverted for templates that ask which response is worse).

    With `chain_of_thought=True` the judge first writes a rationale greedily after the CoT instruction (one per
    order), then reads the answer with the rationale in context.

    Example:

    ```python
    from trl_won.rlaif import TransformersJudge

    judge = TransformersJudge("Qwen/Qwen2.5-1.5B-Instruct", template="helpfulness", use_chat_template=True)
    judge(["What is 2 + 2?"], ["4"], ["5"])  # [0.97]: probability that "4" is preferred
    ```

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            The judge model or a path/hub id (loaded on first use). PEFT-wrapped and 4/8-bit models are accepted.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Its tokenizer; loaded from the model's path when omitted.
        template ([`PairwiseTemplate`] or `str`, *optional*, defaults to `"helpfulness"`):
            A template or a preset name: `"summarization"`, `"helpfulness"`, `"harmlessness"` (asks which response is
            more harmful and inverts the answer). For a custom preamble pass `PairwiseTemplate(preamble=...)`.
        chain_of_thought (`bool`, *optional*, defaults to `False`):
            Write a rationale before answering.
        use_chat_template (`bool`, *optional*, defaults to `False`):
            Send the request as a user message through the tokenizer's chat template, with the ending pre-filled as
            the start of the answer (for instruct models).
        batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass (each pair is two sequences, kept in the same batch).
        max_length (`int`, *optional*):
            Longest judge prompt in tokens; longer pairs get `None` with a reason (and are not stored).
        rationale_max_new_tokens (`int`, *optional*, defaults to `256`):
            Longest rationale, with chain of thought.
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            4-bit/8-bit quantization used when loading from a path.
        model_init_kwargs (`dict`, *optional*):
            `from_pretrained` arguments used when loading from a path.
        chat_template_kwargs (`dict`, *optional*):
            Extra arguments for the chat template.
        name (`str`, *optional*):
            Name of the model in the fingerprint (defaults to its path, or for a model built from a config its class
            name: a model object is identified by a digest of its weights, so no name is needed).
        show_progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar over pairs.
        share_prefix (`bool`, *optional*, defaults to `True`):
            Compute the prompt prefix shared by all pairs (preamble, exemplars) once and reuse its key/value cache.
    """

    fingerprint_name = "TransformersJudge"

    @staticmethod
    def _template(template) -> PairwiseTemplate:
        return get_template("helpfulness" if template is None else template)

    def _example_request(self) -> str:
        return self.template.request("x", "y", "z", self.chain_of_thought)

    def _answers(self) -> list[str]:
        return ["1", "2"]

    def prompts_for(self, prompt: Prompt, completion_a: Completion, completion_b: Completion) -> list[str]:
        """The two requests (a first, a second) for one pair, before the answer is pre-filled."""
        return self.template.requests_for([prompt], [completion_a], [completion_b], self.chain_of_thought)

    def _judge_pairs(
        self, prompts: list[Prompt], completions_a: list[Completion], completions_b: list[Completion]
    ) -> list[PairwiseJudgement]:
        requests = self.template.requests_for(prompts, completions_a, completions_b, self.chain_of_thought)
        rationales, read = self._answer_distributions(requests, 2, "Judging pairs", "pair")
        # Index of the answer that means "the response shown first is preferred".
        first_preferred = 1 if self.template.asks_for_worse else 0
        judgements = []
        for pair, distributions in enumerate(read):
            if isinstance(distributions, str):
                judgements.append(PairwiseJudgement.unjudged(distributions, final=False))
                continue
            if None in distributions:
                judgements.append(PairwiseJudgement.unjudged("the judge gives both answers probability 0"))
                continue
            judgements.append(
                PairwiseJudgement.from_orders(
                    probability_a_first=distributions[0][first_preferred],
                    probability_a_second=1.0 - distributions[1][first_preferred],
                    rationale_a_first=rationales[2 * pair],
                    rationale_a_second=rationales[2 * pair + 1],
                )
            )
        return judgements

    def __repr__(self) -> str:
        return (
            f"TransformersJudge(model={self.lm.name!r}, template={self.template.name!r}, "
            f"chain_of_thought={self.chain_of_thought})"
        )


def expected_score(scores: tuple[int, ...], probabilities: list[float]) -> float:
    """`sum_i score_i * P(score_i)` for probabilities that sum to 1."""
    return sum(s * p for s, p in zip(scores, probabilities, strict=True))


class TransformersScoreJudge(_TransformersJudge, ScoringJudge):
    """Score completions with a local causal LM: the expectation of the score tokens' distribution, in [-1, 1]
    (direct RLAIF, Lee et al. 2023, section 2.3).

    Multi-token scores are handled exactly (for a tokenizer that splits "10" into "1" and "0", `P(10) =
    P("1") P("0" | "1")` and `P(1) = P("1") (1 - P("0" | "1"))`).

    The arguments are those of [`TransformersJudge`] (one sequence per completion instead of two per pair), but for
    the template.

    Args:
        template ([`ScoreTemplate`], *optional*):
            The question; by default asks for a SCORE from 1 to 10.
    """

    fingerprint_name = "TransformersScoreJudge"

    @staticmethod
    def _template(template) -> ScoreTemplate:
        return template or ScoreTemplate()

    def _example_request(self) -> str:
        return self.template.request("x", "y", self.chain_of_thought)

    def _answers(self) -> list[str]:
        return [str(s) for s in self.template.scores]

    def _score_completions(self, prompts: list[Prompt], completions: list[Completion]) -> list[ScoreJudgement]:
        requests = self.template.requests_for(prompts, completions, self.chain_of_thought)
        rationales, read = self._answer_distributions(requests, 1, "Scoring", "completion")
        judgements = []
        for i, distributions in enumerate(read):
            if isinstance(distributions, str):
                judgements.append(ScoreJudgement.unjudged(distributions, final=False))
                continue
            if distributions[0] is None:
                judgements.append(ScoreJudgement.unjudged("the judge gives every score probability 0"))
                continue
            expected = expected_score(self.template.scores, distributions[0])
            judgements.append(
                ScoreJudgement(
                    score=self.template.normalize(expected), expected_score=expected, rationale=rationales[i]
                )
            )
        return judgements

    def __repr__(self) -> str:
        return f"TransformersScoreJudge(model={self.lm.name!r}, chain_of_thought={self.chain_of_thought})"

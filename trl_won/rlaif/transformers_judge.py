"""A pairwise judge backed by a local causal LM (RLAIF, Lee et al. 2023)."""

from typing import Any

from tqdm.auto import tqdm

from ..data_utils import Completion, Prompt
from .answer_tokens import answer_distribution
from .base import PairwiseJudge
from .causal_lm import JudgeLM
from .judgement import PairwiseJudgement
from .templates import PairwiseTemplate, format_completion, format_context, get_template


class TransformersJudge(PairwiseJudge):
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

    def __init__(
        self,
        model,
        tokenizer=None,
        template: PairwiseTemplate | str = "helpfulness",
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
        self.template = get_template(template)
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
        example = self.lm.render(self.template.request("x", "y", "z", chain_of_thought), self.template.prefill())
        self.answer_tokens = self.lm.resolve_answers(example, ["1", "2"])

    @property
    def model(self):
        return self.lm.model

    @property
    def tokenizer(self):
        return self.lm.tokenizer

    def prompts_for(self, prompt: Prompt, completion_a: Completion, completion_b: Completion) -> list[str]:
        """The two requests (a first, a second) for one pair, before the answer is pre-filled."""
        context, a, b = format_context(prompt), format_completion(completion_a), format_completion(completion_b)
        return [
            self.template.request(context, a, b, self.chain_of_thought),
            self.template.request(context, b, a, self.chain_of_thought),
        ]

    def _rationales(self, requests: list[str]) -> list[str]:
        texts = [self.lm.render(r, self.template.prefill(True)) for r in requests]
        rationales = self.lm.greedy(texts, self.rationale_max_new_tokens)
        # A rationale that goes on to write the ending itself is cut there, so the prompt has one answer position.
        ending = self.template.ending.strip()
        return [r.split(ending)[0].strip() for r in rationales]

    def _judge_pairs(
        self, prompts: list[Prompt], completions_a: list[Completion], completions_b: list[Completion]
    ) -> list[PairwiseJudgement]:
        requests = [r for p, a, b in zip(prompts, completions_a, completions_b) for r in self.prompts_for(p, a, b)]
        rationales = self._rationales(requests) if self.chain_of_thought else [None] * len(requests)
        texts = [
            self.answer_tokens.apply(self.lm.render(r, self.template.prefill(self.chain_of_thought, rationale)))
            for r, rationale in zip(requests, rationales, strict=True)
        ]
        ids = self.lm.tokenize(texts)
        nodes = self.answer_tokens.nodes
        sequences, wanted, groups, rows_of_text = [], [], [], {}
        problems = {}
        for pair in range(len(prompts)):
            problem = self.lm.too_long(ids[2 * pair]) or self.lm.too_long(ids[2 * pair + 1])
            if problem:
                problems[pair] = problem
                continue
            group = []
            for text_index in (2 * pair, 2 * pair + 1):
                for node in nodes:
                    rows_of_text.setdefault(text_index, []).append(len(sequences))
                    group.append(len(sequences))
                    sequences.append(ids[text_index] + list(node))
                    wanted.append(self.answer_tokens.needed_tokens(node))
            groups.append(group)
        progress = tqdm(total=len(groups), desc="Judging pairs", unit="pair", disable=not self.show_progress)
        logprobs = self.lm.next_token_logprobs(sequences, wanted, groups, progress) if sequences else []
        progress.close()

        # Index of the answer that means "the response shown first is preferred".
        first_preferred = 1 if self.template.asks_for_worse else 0
        judgements = []
        for pair in range(len(prompts)):
            if pair in problems:
                judgements.append(PairwiseJudgement.unjudged(problems[pair], final=False))
                continue
            position_one = []
            for text_index in (2 * pair, 2 * pair + 1):
                by_node = {node: logprobs[row] for node, row in zip(nodes, rows_of_text[text_index], strict=True)}
                distribution = answer_distribution(self.answer_tokens, by_node)
                position_one.append(None if distribution is None else distribution[first_preferred])
            if None in position_one:
                judgements.append(PairwiseJudgement.unjudged("the judge gives both answers probability 0"))
                continue
            judgements.append(
                PairwiseJudgement.from_orders(
                    probability_a_first=position_one[0],
                    probability_a_second=1.0 - position_one[1],
                    rationale_a_first=rationales[2 * pair],
                    rationale_a_second=rationales[2 * pair + 1],
                )
            )
        return judgements

    def fingerprint_fields(self) -> dict[str, Any]:
        return {
            "judge": "TransformersJudge",
            **self.lm.fingerprint_fields(),
            "template": self.template.to_dict(),
            "chain_of_thought": self.chain_of_thought,
            "rationale_max_new_tokens": self.rationale_max_new_tokens if self.chain_of_thought else None,
        }

    def __repr__(self) -> str:
        return (
            f"TransformersJudge(model={self.lm.name!r}, template={self.template.name!r}, "
            f"chain_of_thought={self.chain_of_thought})"
        )

"""Scoring judges for direct RLAIF (d-RLAIF): the judge rates one completion from 1 to 10, and the reward is the
expected score over the score tokens, normalized to [-1, 1] (Lee et al. 2023, section 2.3)."""

import math
from typing import Any

from tqdm.auto import tqdm

from ..data_utils import Completion, Prompt
from .answer_tokens import answer_distribution
from .base import ScoringJudge
from .causal_lm import JudgeLM
from .chat_judge import ChatJudgeMixin, answer_logprobs, text_answer
from .judgement import ScoreJudgement
from .openai_client import ChatResult
from .templates import ScoreTemplate, format_completion, format_context


def expected_score(scores: tuple[int, ...], probabilities: list[float]) -> float:
    """`sum_i score_i * P(score_i)` for probabilities that sum to 1."""
    return sum(s * p for s, p in zip(scores, probabilities, strict=True))


class TransformersScoreJudge(ScoringJudge):
    """Score completions with a local causal LM: the expectation of the score tokens' distribution, in [-1, 1].

    Multi-token scores are handled exactly (for a tokenizer that splits "10" into "1" and "0", `P(10) =
    P("1") P("0" | "1")` and `P(1) = P("1") (1 - P("0" | "1"))`).

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            The judge model or a path/hub id (loaded on first use); 4/8-bit and PEFT models are accepted.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Its tokenizer; loaded from the model's path when omitted.
        template ([`ScoreTemplate`], *optional*):
            The question; by default asks for a SCORE from 1 to 10.
        chain_of_thought (`bool`, *optional*, defaults to `False`):
            Write a rationale (greedily) before scoring.
        use_chat_template (`bool`, *optional*, defaults to `False`):
            Send the request through the chat template with the ending pre-filled (instruct models).
        batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass.
        max_length (`int`, *optional*):
            Longest judge prompt in tokens; longer ones get `None` with a reason.
        rationale_max_new_tokens (`int`, *optional*, defaults to `256`):
            Longest rationale.
        quantization_config (*optional*): As for [`TransformersJudge`].
        model_init_kwargs (*optional*): As for [`TransformersJudge`].
        chat_template_kwargs (*optional*): As for [`TransformersJudge`].
        name (*optional*): As for [`TransformersJudge`].
        show_progress (*optional*): As for [`TransformersJudge`].
        share_prefix (*optional*): As for [`TransformersJudge`].
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        template: ScoreTemplate | None = None,
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
        self.template = template or ScoreTemplate()
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
        example = self.lm.render(self.template.request("x", "y", chain_of_thought), self.template.prefill())
        self.answer_tokens = self.lm.resolve_answers(example, [str(s) for s in self.template.scores])

    def _score_completions(self, prompts: list[Prompt], completions: list[Completion]) -> list[ScoreJudgement]:
        requests = [
            self.template.request(format_context(p), format_completion(c), self.chain_of_thought)
            for p, c in zip(prompts, completions, strict=True)
        ]
        rationales: list[str | None] = [None] * len(requests)
        if self.chain_of_thought:
            texts = [self.lm.render(r, self.template.prefill(True)) for r in requests]
            ending = self.template.ending.strip()
            rationales = [r.split(ending)[0].strip() for r in self.lm.greedy(texts, self.rationale_max_new_tokens)]
        texts = [
            self.answer_tokens.apply(self.lm.render(r, self.template.prefill(self.chain_of_thought, rationale)))
            for r, rationale in zip(requests, rationales, strict=True)
        ]
        ids = self.lm.tokenize(texts)
        nodes = self.answer_tokens.nodes
        sequences, wanted, groups, problems = [], [], [], {}
        for i, item_ids in enumerate(ids):
            problem = self.lm.too_long(item_ids)
            if problem:
                problems[i] = problem
                continue
            groups.append(list(range(len(sequences), len(sequences) + len(nodes))))
            for node in nodes:
                sequences.append(item_ids + list(node))
                wanted.append(self.answer_tokens.needed_tokens(node))
        progress = tqdm(total=len(groups), desc="Scoring", unit="completion", disable=not self.show_progress)
        logprobs = self.lm.next_token_logprobs(sequences, wanted, groups, progress) if sequences else []
        progress.close()
        judgements, row = [], 0
        for i in range(len(requests)):
            if i in problems:
                judgements.append(ScoreJudgement.unjudged(problems[i], final=False))
                continue
            by_node = {node: logprobs[row + k] for k, node in enumerate(nodes)}
            row += len(nodes)
            distribution = answer_distribution(self.answer_tokens, by_node)
            if distribution is None:
                judgements.append(ScoreJudgement.unjudged("the judge gives every score probability 0"))
                continue
            expected = expected_score(self.template.scores, distribution)
            judgements.append(
                ScoreJudgement(
                    score=self.template.normalize(expected), expected_score=expected, rationale=rationales[i]
                )
            )
        return judgements

    def fingerprint_fields(self) -> dict[str, Any]:
        return {
            "judge": "TransformersScoreJudge",
            **self.lm.fingerprint_fields(),
            "template": self.template.to_dict(),
            "chain_of_thought": self.chain_of_thought,
            "rationale_max_new_tokens": self.rationale_max_new_tokens if self.chain_of_thought else None,
        }

    def __repr__(self) -> str:
        return f"TransformersScoreJudge(model={self.lm.name!r}, chain_of_thought={self.chain_of_thought})"


class OpenAIScoreJudge(ChatJudgeMixin, ScoringJudge):
    """Score completions with a model behind an OpenAI-compatible chat-completions API.

    With `logprobs`, the expected score is computed over the score tokens found among the first answer token's
    `top_logprobs` (renormalized over those found); an answer without log-probabilities raises [`JudgeError`].
    With `logprobs=False`, a reply that is exactly one of the scores is used as is; anything else gives `None` with a
    reason. A server whose tokenizer splits "10" into "1", "0" cannot tell "1" from "10" in the first token's
    log-probabilities; use a scale of single tokens (e.g. 0-9) with such servers. Requests go to the chat endpoint
    only (a scoring judge's prompt is not rendered client-side).

    Args:
        model (`str`): The model name the server knows.
        base_url (`str`, *optional*): The API root; defaults to `$OPENAI_BASE_URL`, else OpenAI's API.
        template ([`ScoreTemplate`], *optional*): The question; by default asks for a SCORE from 1 to 10.
        chain_of_thought (`bool`, *optional*, defaults to `False`): Ask for a rationale first.
        api_key (*optional*): As for [`OpenAIJudge`].
        api_key_env (*optional*): As for [`OpenAIJudge`].
        client (*optional*): As for [`OpenAIJudge`].
        system_prompt (*optional*): As for [`OpenAIJudge`].
        logprobs (*optional*): As for [`OpenAIJudge`].
        top_logprobs (*optional*): As for [`OpenAIJudge`].
        max_concurrency (*optional*): As for [`OpenAIJudge`].
        requests_per_second (*optional*): As for [`OpenAIJudge`].
        timeout (*optional*): As for [`OpenAIJudge`].
        max_retries (*optional*): As for [`OpenAIJudge`].
        rationale_max_tokens (*optional*): As for [`OpenAIJudge`].
        extra_body (*optional*): As for [`OpenAIJudge`].
        show_progress (*optional*): As for [`OpenAIJudge`].
    """

    # Two tokens leave room for a score such as "10" that is one token for some tokenizers and two for others.
    answer_max_tokens = 2

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        template: ScoreTemplate | None = None,
        *,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        client: Any = None,
        chain_of_thought: bool = False,
        system_prompt: str | None = None,
        logprobs: bool = True,
        top_logprobs: int = 20,
        max_concurrency: int = 32,
        requests_per_second: float | None = None,
        timeout: float = 60.0,
        max_retries: int = 6,
        rationale_max_tokens: int = 512,
        extra_body: dict | None = None,
        show_progress: bool = False,
    ):
        self.template = template or ScoreTemplate()
        self._init_chat(
            model,
            base_url,
            api_key=api_key,
            api_key_env=api_key_env,
            client=client,
            chain_of_thought=chain_of_thought,
            system_prompt=system_prompt,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            max_concurrency=max_concurrency,
            requests_per_second=requests_per_second,
            timeout=timeout,
            max_retries=max_retries,
            rationale_max_tokens=rationale_max_tokens,
            extra_body=extra_body,
            show_progress=show_progress,
        )

    def judgement_from(self, result: ChatResult, rationale: str | None = None) -> ScoreJudgement:
        """A score from one answer: top log-probabilities when present, else the exact answer text."""
        if result.error is not None:
            return ScoreJudgement.unjudged(result.error, final=result.final)
        names = [str(s) for s in self.template.scores]
        found = answer_logprobs(result.top_logprobs, names)
        if found:
            top = max(found.values())
            weights = {int(name): math.exp(logprob - top) for name, logprob in found.items()}
            total = sum(weights.values())
            expected = sum(s * w for s, w in weights.items()) / total
        elif self.logprobs:
            return ScoreJudgement.unjudged(f"no score is among the top {self.top_logprobs} first tokens")
        else:
            answer = text_answer(result.content, names)
            if answer is None:
                return ScoreJudgement.unjudged(
                    f"the judge answered {str(result.content)[:80]!r}, which is not one of the scores {names}"
                )
            expected = float(answer)
        return ScoreJudgement(score=self.template.normalize(expected), expected_score=expected, rationale=rationale)

    def _score_completions(self, prompts: list[Prompt], completions: list[Completion]) -> list[ScoreJudgement]:
        requests = [
            self.template.request(format_context(p), format_completion(c), self.chain_of_thought)
            for p, c in zip(prompts, completions, strict=True)
        ]
        return [self.judgement_from(result, rationale) for result, rationale in self._answers(requests)]

    def _score_streaming(self, prompts, completions, on_judged, chunk_size) -> None:
        requests = [
            self.template.request(format_context(p), format_completion(c), self.chain_of_thought)
            for p, c in zip(prompts, completions, strict=True)
        ]
        self._answers(requests, lambda i, answer: on_judged([i], [self.judgement_from(*answer)]))

    def fingerprint_fields(self) -> dict[str, Any]:
        return {"judge": "OpenAIScoreJudge", **self._chat_fingerprint()}

    def __repr__(self) -> str:
        return f"OpenAIScoreJudge(model={self.model!r}, client={self.client!r})"

"""Scoring judges for direct RLAIF (d-RLAIF): the judge rates one completion from 1 to 10, and the reward is the
expected score over the score tokens, normalized to [-1, 1] (Lee et al. 2023, section 2.3)."""

import math
from typing import Any

from ..data_utils import Completion, Prompt
from .base import ScoringJudge
from .chat_judge import ChatJudgeMixin, answer_logprobs, text_answer
from .judgement import ScoreJudgement
from .openai_client import ChatResult
from .templates import ScoreTemplate, format_completion, format_context


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

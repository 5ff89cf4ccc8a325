"""What the OpenAI-compatible judges share: their settings, the chat messages they send, and how an answer is read.

The request (preamble, exemplars, sample) is the user message and ends with the template's ending, after which the
judge answers. With chain of thought the judge first answers the request (with its CoT instruction) with a rationale;
the rationale comes back as the assistant's turn, followed by the ending as a new user message.
"""

import math
from collections.abc import Sequence
from typing import Any

from .openai_client import ChatCompletionsClient, ChatResult


def answer_logprobs(top_logprobs: dict[str, float] | None, answers: Sequence[str]) -> dict[str, float]:
    """Log-probability of each answer among the first token's top log-probabilities.

    Tokens are compared without surrounding whitespace ("1" and " 1" are the same answer; their probabilities add).
    Answers absent from the list are absent from the result.
    """
    found: dict[str, float] = {}
    for token, logprob in (top_logprobs or {}).items():
        key = token.strip()
        if key in answers:
            found[key] = logprob if key not in found else math.log(math.exp(found[key]) + math.exp(logprob))
    return found


def text_answer(content: str | None, answers: Sequence[str]) -> str | None:
    """The answer if the whole reply, without surrounding whitespace, is exactly one of `answers`; else `None`.

    Nothing else is read from the text: a reply that merely contains an answer is not an answer.
    """
    if content is None:
        return None
    reply = content.strip()
    return reply if reply in answers else None


class ChatJudgeMixin:
    """Settings, request bodies and rationales of a judge behind a chat-completions endpoint."""

    template: Any  # a PairwiseTemplate or ScoreTemplate
    answer_max_tokens = 1

    def _init_chat(
        self,
        model: str,
        base_url: str,
        *,
        api_key_env: str | None,
        chain_of_thought: bool,
        system_prompt: str | None,
        logprobs: bool,
        top_logprobs: int,
        max_concurrency: int,
        requests_per_second: float | None,
        timeout: float,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
        rationale_max_tokens: int,
        extra_body: dict | None,
        show_progress: bool,
    ) -> None:
        if not model:
            raise ValueError("`model` must name the model served at `base_url`.")
        if top_logprobs < 1:
            raise ValueError(f"`top_logprobs` must be >= 1, got {top_logprobs}.")
        self.model = model
        self.chain_of_thought = chain_of_thought
        self.system_prompt = system_prompt
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.rationale_max_tokens = rationale_max_tokens
        self.extra_body = dict(extra_body or {})
        self.client = ChatCompletionsClient(
            base_url,
            api_key_env=api_key_env,
            max_concurrency=max_concurrency,
            requests_per_second=requests_per_second,
            timeout=timeout,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            show_progress=show_progress,
        )

    @property
    def stats(self):
        """[`RequestStats`]: requests, retries, failures and tokens so far."""
        return self.client.stats

    def messages(self, request: str, rationale: str | None = None, for_rationale: bool = False) -> list[dict]:
        """The chat messages of a request: to write a rationale, or to answer (after the rationale, if any)."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        ending = self.template.ending.rstrip()
        if for_rationale:
            return messages + [{"role": "user", "content": request}]
        if rationale is None:
            return messages + [{"role": "user", "content": f"{request}\n\n{ending}"}]
        return messages + [
            {"role": "user", "content": request},
            {"role": "assistant", "content": rationale},
            {"role": "user", "content": ending},
        ]

    def _body(self, messages: list[dict], max_tokens: int, logprobs: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens}
        body["temperature"] = 0.0
        if logprobs:
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        return {**body, **self.extra_body}

    def _answers(self, requests: list[str]) -> tuple[list[ChatResult], list[str | None]]:
        """Ask every request (writing a rationale first with chain of thought); the answers and the rationales."""
        rationales: list[str | None] = [None] * len(requests)
        results: dict[int, ChatResult] = {}
        if self.chain_of_thought:
            bodies = [
                self._body(self.messages(r, for_rationale=True), self.rationale_max_tokens, False) for r in requests
            ]
            for i, result in enumerate(self.client.complete(bodies)):
                if result.error is not None:
                    results[i] = result
                elif not (result.content or "").strip():
                    results[i] = ChatResult(error="the judge wrote no rationale")
                else:
                    rationales[i] = result.content.strip()
        todo = [i for i in range(len(requests)) if i not in results]
        bodies = [
            self._body(self.messages(requests[i], rationales[i]), self.answer_max_tokens, self.logprobs) for i in todo
        ]
        results.update(zip(todo, self.client.complete(bodies), strict=True))
        return [results[i] for i in range(len(requests))], rationales

    def _chat_fingerprint(self) -> dict[str, Any]:
        # The server's address is left out: the same model served elsewhere gives the same labels.
        return {
            "model": self.model,
            "template": self.template.to_dict(),
            "chain_of_thought": self.chain_of_thought,
            "system_prompt": self.system_prompt,
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs if self.logprobs else None,
            "rationale_max_tokens": self.rationale_max_tokens if self.chain_of_thought else None,
            "extra_body": self.extra_body,
        }

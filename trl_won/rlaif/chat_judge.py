"""What the OpenAI-compatible judges share: their settings, the requests they send, and how an answer is read.

Two ways to send a judge prompt:

- chat (`/chat/completions`, the default; the only one OpenAI's chat models offer): the request (preamble, exemplars,
  sample) and the template's ending are the user message, and the server's chat template lets the model answer from
  scratch. With chain of thought the judge first answers the request (with its CoT instruction) with a rationale; the
  rationale comes back as the assistant's turn, followed by the ending as a new user message. The model reads another
  prompt than a local judge does, so its labels are not interchangeable with a local judge's.
- completions (`/completions`, when a `tokenizer` is given; vLLM, llama.cpp and TGI): the prompt is rendered here
  exactly as [`TransformersJudge`] renders it (the same chat template, the ending pre-filled at the start of the
  assistant's answer, the same answer tokens), and the server only continues it. On the same weights the served and
  the local judge then read the same tokens and agree up to the server's numerics.
"""

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from .causal_lm import JudgeLM
from .openai_client import (
    ChatResult,
    JudgeClient,
    JudgeError,
    parse_chat_response,
    parse_completion_response,
    sanitize_url,
)


logger = logging.getLogger(__name__)

# The connection settings a served judge passes on to its [`JudgeClient`] (documented there).
CLIENT_SETTINGS = tuple(
    name
    for name, parameter in inspect.signature(JudgeClient.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)


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
    """Settings, request bodies and rationales of a judge behind an OpenAI-compatible endpoint: the constructor and
    fingerprint of [`OpenAIJudge`] and [`OpenAIScoreJudge`] (see [`OpenAIJudge`] for the arguments). The connection
    settings (`api_key`, `api_key_env`, `client`, `max_concurrency`, `requests_per_second`, `timeout`, `max_retries`,
    `show_progress`) go to [`JudgeClient`] as they are."""

    template: Any  # a PairwiseTemplate or ScoreTemplate
    answer_max_tokens = 1
    lm: JudgeLM | None = None

    fingerprint_name: str

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        template: Any = None,
        *,
        chain_of_thought: bool = False,
        system_prompt: str | None = None,
        logprobs: bool = True,
        top_logprobs: int = 20,
        rationale_max_tokens: int = 512,
        extra_body: dict | None = None,
        **client_settings: Any,
    ):
        if not model:
            raise ValueError("`model` must name the model served at `base_url`.")
        if top_logprobs < 1:
            raise ValueError(f"`top_logprobs` must be >= 1, got {top_logprobs}.")
        unknown = sorted(set(client_settings) - set(CLIENT_SETTINGS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected argument(s) {unknown}. Its settings are those of the judge "
                f"and the connection settings of `JudgeClient`: {list(CLIENT_SETTINGS)}."
            )
        self.template = template
        self.model = model
        self.chain_of_thought = chain_of_thought
        self.system_prompt = system_prompt
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.rationale_max_tokens = rationale_max_tokens
        self.extra_body = dict(extra_body or {})
        self.client = JudgeClient(base_url, **client_settings)

    @property
    def endpoint(self) -> str:
        """`"completions"` (prompt rendered here with the model's tokenizer) or `"chat"`."""
        return "chat" if self.lm is None else "completions"

    @property
    def stats(self):
        """[`RequestStats`]: requests, retries, failures and tokens so far."""
        return self.client.stats

    # ---------------------------------------------------------------------------------------------- requests

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

    def prompt_text(self, request: str, rationale: str | None = None, for_rationale: bool = False) -> str:
        """Completions mode: the exact text a local judge with this tokenizer reads (see [`TransformersJudge`])."""
        if for_rationale:
            return self.lm.render(request, self.template.prefill(True))
        prefill = self.template.prefill(self.chain_of_thought, rationale)
        return self.answer_tokens.apply(self.lm.render(request, prefill))

    def _body(self, request: str, rationale: str | None, for_rationale: bool) -> dict[str, Any]:
        max_tokens = self.rationale_max_tokens if for_rationale else self.answer_max_tokens
        logprobs = self.logprobs and not for_rationale
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": 0.0}
        if self.lm is None:
            body["messages"] = self.messages(request, rationale, for_rationale)
            if logprobs:
                body.update(logprobs=True, top_logprobs=self.top_logprobs)
        else:
            body["prompt"] = self.prompt_text(request, rationale, for_rationale)
            if logprobs:
                body["logprobs"] = self.top_logprobs
        return {**body, **self.extra_body}

    @property
    def route(self) -> tuple[str, Callable[[Any], ChatResult]]:
        """The endpoint path (under the API root) the judge's requests go to, and the parser of its answers."""
        if self.lm is None:
            return "/chat/completions", parse_chat_response
        return "/completions", parse_completion_response

    def answer_request(self, request: str) -> dict[str, Any]:
        """The JSON body of the request that asks for the answer to `request` (without chain of thought): what the
        live judge posts and what a batch file holds, built once here."""
        return self._body(request, None, False)

    def checked_answer(self, result: ChatResult) -> ChatResult:
        """`result`, after refusing an answer without the log-probabilities the judge asked for."""
        if self.logprobs and result.error is None and result.top_logprobs is None:
            self._no_logprobs()
        return result

    def _post(self, session, body: dict[str, Any]) -> ChatResult:
        path, parse = self.route
        return session.post(path, body, parse)

    def _job(self, request: str) -> Callable:
        """One item's requests: the rationale first with chain of thought, then the answer."""

        def job(session) -> tuple[ChatResult, str | None]:
            rationale = None
            if self.chain_of_thought:
                result = self._post(session, self._body(request, None, for_rationale=True))
                if result.error is not None:
                    return result, None
                # A rationale that goes on to write the ending itself is cut there (as the local judge does).
                rationale = self.template.cut_rationale(result.content or "")
                if not rationale:
                    return ChatResult(error="the judge wrote no rationale"), None
            body = self.answer_request(request) if rationale is None else self._body(request, rationale, False)
            return self.checked_answer(self._post(session, body)), rationale

        return job

    def _no_logprobs(self) -> None:
        message = (
            f"The judge server at {sanitize_url(self.client.base_url)} answered without log-probabilities "
            "although the judge asked for them (`transformers serve`, for instance, ignores `logprobs`). Labels "
            "from the answer text alone are hard 0/1 labels, not the soft labels this judge's fingerprint stands "
            "for, so none are made. Serve the model with a server that returns log-probabilities (vLLM, llama.cpp, "
            "TGI), or pass `logprobs=False` to label with hard labels under a fingerprint of their own."
        )
        # Once, though every worker in flight gets such an answer; logged under the lock, so that no worker's error
        # (which stops the run) can overtake the warning.
        with self.client._lock:
            warned, self._warned_no_logprobs = getattr(self, "_warned_no_logprobs", False), True
            if not warned:
                logger.warning(message)
        raise JudgeError(message)

    def _answers(
        self, requests: Sequence[str], on_done: Callable[[int, tuple[ChatResult, str | None]], None] | None = None
    ) -> list[tuple[ChatResult, str | None]]:
        """Ask every request, all through one pool of requests in flight; `(result, rationale)` per request."""
        return self.client.map([self._job(r) for r in requests], on_done)

    def fingerprint_fields(self) -> dict[str, Any]:
        # The server's address is left out: the same model served elsewhere gives the same labels.
        fields = {
            "judge": self.fingerprint_name,
            "model": self.model,
            "endpoint": self.endpoint,
            "template": self.template.to_dict(),
            "chain_of_thought": self.chain_of_thought,
            "system_prompt": self.system_prompt,
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs if self.logprobs else None,
            "rationale_max_tokens": self.rationale_max_tokens if self.chain_of_thought else None,
            "extra_body": self.extra_body,
        }
        if self.lm is not None:
            fields["prompt"] = self.lm.prompt_fingerprint_fields()
        return fields

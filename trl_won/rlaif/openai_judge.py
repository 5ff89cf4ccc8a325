"""A pairwise judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, TGI, llama.cpp server)."""

import math
from typing import Any

from ..data_utils import Completion, Prompt
from .base import PairwiseJudge
from .chat_judge import ChatJudgeMixin, answer_logprobs, text_answer
from .judgement import PairwiseJudgement
from .openai_client import ChatResult
from .templates import PairwiseTemplate, format_completion, format_context, get_template


class OpenAIJudge(ChatJudgeMixin, PairwiseJudge):
    """Judge preferences with a model behind an OpenAI-compatible chat-completions API.

    Each pair is sent twice, once per order, all requests concurrently. When the server returns `logprobs`, the
    probability of each order is the softmax over the log-probabilities of "1" and "2" among the first answer token's
    `top_logprobs` (an answer missing from the top list counts as probability 0). When it does not, the answer text
    is used: exactly "1" or "2" gives a hard label (probability 1 or 0), anything else gives `None` with the reply as
    reason, never a guess. The probability that `a` is preferred is the mean of the two orders.

    Example with a local vLLM server (`vllm serve Qwen/Qwen2.5-7B-Instruct`):

    ```python
    judge = OpenAIJudge("Qwen/Qwen2.5-7B-Instruct", base_url="http://localhost:8000/v1", template="summarization")
    ```

    Args:
        model (`str`):
            The model name the server knows.
        base_url (`str`, *optional*, defaults to OpenAI's API):
            The API root, `https://api.openai.com/v1` by default; for vLLM, e.g. `http://localhost:8000/v1`.
        template ([`PairwiseTemplate`] or `str`, *optional*, defaults to `"helpfulness"`):
            A template or preset name (see [`TransformersJudge`]).
        api_key_env (`str` or `None`, *optional*, defaults to `"OPENAI_API_KEY"`):
            Environment variable holding the API key; unset means no key (local servers). The key is never logged,
            printed, stored, or part of the fingerprint.
        chain_of_thought (`bool`, *optional*, defaults to `False`):
            First ask for a rationale (one per order), then ask for the answer with the rationale in the conversation.
        system_prompt (`str`, *optional*):
            A system message sent before the request.
        logprobs (`bool`, *optional*, defaults to `True`):
            Ask for `logprobs`/`top_logprobs`. Turn off for servers that reject the parameter.
        top_logprobs (`int`, *optional*, defaults to `20`):
            How many candidate first tokens to ask for.
        max_concurrency (`int`, *optional*, defaults to `32`):
            Requests in flight at once.
        requests_per_second (`float`, *optional*):
            Most requests started per second.
        timeout (`float`, *optional*, defaults to `60.0`):
            Seconds before a request is retried.
        max_retries (`int`, *optional*, defaults to `6`):
            Retries for 429, 5xx, timeouts and malformed answers, with exponential backoff and jitter.
        backoff_base (`float`, *optional*, defaults to `1.0`):
            First retry delay in seconds.
        backoff_max (`float`, *optional*, defaults to `60.0`):
            Longest retry delay (a server's `Retry-After` is honored even when longer).
        rationale_max_tokens (`int`, *optional*, defaults to `512`):
            Longest rationale, with chain of thought.
        extra_body (`dict`, *optional*):
            Extra JSON fields for every request (for instance `{"max_completion_tokens": 1}` or vLLM's
            `{"chat_template_kwargs": {"enable_thinking": False}}`). Part of the fingerprint: put no secret here.
        show_progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar over requests.
    """

    answers = ("1", "2")

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        template: PairwiseTemplate | str = "helpfulness",
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        chain_of_thought: bool = False,
        system_prompt: str | None = None,
        logprobs: bool = True,
        top_logprobs: int = 20,
        max_concurrency: int = 32,
        requests_per_second: float | None = None,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        rationale_max_tokens: int = 512,
        extra_body: dict | None = None,
        show_progress: bool = False,
    ):
        self.template = get_template(template)
        self._init_chat(
            model,
            base_url,
            api_key_env=api_key_env,
            chain_of_thought=chain_of_thought,
            system_prompt=system_prompt,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            max_concurrency=max_concurrency,
            requests_per_second=requests_per_second,
            timeout=timeout,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            rationale_max_tokens=rationale_max_tokens,
            extra_body=extra_body,
            show_progress=show_progress,
        )

    def position_one_probability(self, result: ChatResult) -> tuple[float | None, str | None]:
        """Probability that the response shown first is preferred, from one answer; or `None` and why."""
        if result.error is not None:
            return None, result.error
        found = answer_logprobs(result.top_logprobs, self.answers)
        if found:
            top = max(found.values())
            weights = {a: math.exp(found[a] - top) if a in found else 0.0 for a in self.answers}
            p_one = weights["1"] / (weights["1"] + weights["2"])
        else:
            answer = text_answer(result.content, self.answers)
            if answer is None:
                return None, f"the judge answered {str(result.content)[:80]!r}, which is neither 1 nor 2"
            p_one = 1.0 if answer == "1" else 0.0
        return (1.0 - p_one if self.template.asks_for_worse else p_one), None

    def _judge_pairs(
        self, prompts: list[Prompt], completions_a: list[Completion], completions_b: list[Completion]
    ) -> list[PairwiseJudgement]:
        requests = []
        for prompt, a, b in zip(prompts, completions_a, completions_b, strict=True):
            context, text_a, text_b = format_context(prompt), format_completion(a), format_completion(b)
            requests.append(self.template.request(context, text_a, text_b, self.chain_of_thought))
            requests.append(self.template.request(context, text_b, text_a, self.chain_of_thought))
        results, rationales = self._answers(requests)
        judgements = []
        for pair in range(len(requests) // 2):
            first, first_reason = self.position_one_probability(results[2 * pair])
            second, second_reason = self.position_one_probability(results[2 * pair + 1])
            if first is None or second is None:
                reason = first_reason or second_reason
                final = results[2 * pair].final and results[2 * pair + 1].final
                judgements.append(PairwiseJudgement.unjudged(reason, final=final))
                continue
            judgements.append(
                PairwiseJudgement.from_orders(first, 1.0 - second, rationales[2 * pair], rationales[2 * pair + 1])
            )
        return judgements

    def fingerprint_fields(self) -> dict[str, Any]:
        return {"judge": "OpenAIJudge", **self._chat_fingerprint()}

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(model={self.model!r}, client={self.client!r}, template={self.template.name!r}, "
            f"chain_of_thought={self.chain_of_thought})"
        )

"""A pairwise judge behind any OpenAI-compatible endpoint (OpenAI, vLLM, TGI, llama.cpp, `transformers serve`)."""

import math
import threading
from collections.abc import Callable
from typing import Any

from ..data_utils import Completion, Prompt
from .base import PairwiseJudge
from .chat_judge import ChatJudgeMixin, answer_logprobs, text_answer
from .judgement import PairwiseJudgement
from .openai_client import ChatResult
from .templates import PairwiseTemplate, format_completion, format_context, get_template


class OpenAIJudge(ChatJudgeMixin, PairwiseJudge):
    """Judge preferences with a model behind an OpenAI-compatible API.

    Each pair is sent twice, once per order; all requests of a call go through one pool of `max_concurrency`
    requests in flight. The probability of each order is the softmax over the log-probabilities of the answers "1"
    and "2" among the first answer token's top log-probabilities (an answer missing from the top list counts as
    probability 0); the probability that `a` is preferred is the mean of the two orders.

    Two ways to ask (see `docs/rlaif.md` for the settings per server):

    - With `tokenizer` (the served model's tokenizer, a path or an object), the prompt is rendered here exactly as
      [`TransformersJudge`] renders it (with `use_chat_template`, the same chat template and the ending pre-filled at
      the start of the answer) and sent to the completions endpoint, which vLLM, llama.cpp and TGI serve with top
      log-probabilities. Served and local judges on the same weights then give the same labels (to about 1e-2).
      Recommended for self-hosted servers.
    - Without it, the chat endpoint: the ending stays in the user message and the model answers from scratch after
      the server's chat template. The only way with chat-only APIs (OpenAI); such labels are not interchangeable
      with a local judge's, and the fingerprints differ.

    With `logprobs=True` (the default) an answer without log-probabilities (`transformers serve` ignores the
    parameter) raises [`JudgeError`]: hard labels are never made where soft ones are expected. With
    `logprobs=False` the answer text gives hard labels: exactly "1" or "2" is probability 1 or 0, anything else
    `None` with the reply as reason, never a guess.

    Example with a local vLLM server (`vllm serve Qwen/Qwen2.5-7B-Instruct`):

    ```python
    judge = OpenAIJudge("Qwen/Qwen2.5-7B-Instruct", base_url="http://localhost:8000/v1", template="summarization",
                        tokenizer="Qwen/Qwen2.5-7B-Instruct", use_chat_template=True)
    ```

    Args:
        model (`str`):
            The model name the server knows.
        base_url (`str`, *optional*):
            The API root, e.g. `http://localhost:8000/v1`; defaults to `$OPENAI_BASE_URL`, else OpenAI's API.
        template ([`PairwiseTemplate`] or `str`, *optional*, defaults to `"helpfulness"`):
            A template or preset name (see [`TransformersJudge`]).
        api_key (`str`, *optional*):
            The API key; defaults to `$OPENAI_API_KEY` (servers of your own need none). Never logged, printed,
            stored, or part of the fingerprint.
        api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`):
            The environment variable read for the key when `api_key` is not given.
        client (`openai.OpenAI` or `openai.AsyncOpenAI`, *optional*):
            Your own `openai` client instead of `base_url`/`api_key` (its URL, key and HTTP settings are used; the
            judge's `timeout` and `max_retries` apply per request).
        tokenizer (`str` or [`~transformers.PreTrainedTokenizerBase`], *optional*):
            The served model's tokenizer: render prompts here and use the completions endpoint (see above).
        use_chat_template (`bool`, *optional*, defaults to `False`):
            With `tokenizer`: render the request through its chat template with the ending pre-filled, as
            `TransformersJudge(use_chat_template=True)` does (instruct models).
        chat_template_kwargs (`dict`, *optional*):
            With `tokenizer`: extra arguments for the chat template.
        chain_of_thought (`bool`, *optional*, defaults to `False`):
            First ask for a rationale (one per order), then for the answer with the rationale in context.
        system_prompt (`str`, *optional*):
            Chat endpoint: a system message sent before the request.
        logprobs (`bool`, *optional*, defaults to `True`):
            Ask for log-probabilities (soft labels). `False` for hard labels from the answer text.
        top_logprobs (`int`, *optional*, defaults to `20`):
            How many candidate first tokens to ask for (20 is the most vLLM and OpenAI return by default).
        max_concurrency (`int`, *optional*, defaults to `32`):
            Requests in flight at once.
        requests_per_second (`float`, *optional*):
            Most requests started per second.
        timeout (`float`, *optional*, defaults to `60.0`):
            Seconds the server may take on one request, not counting the wait behind this judge's other requests
            (see [`JudgeClient`]).
        max_retries (`int`, *optional*, defaults to `6`):
            Retries for 429, 408, 409, 5xx, timeouts and connection errors (exponential backoff with jitter, or the
            server's `Retry-After`), by the `openai` client.
        rationale_max_tokens (`int`, *optional*, defaults to `512`):
            Longest rationale, with chain of thought.
        extra_body (`dict`, *optional*):
            Extra JSON fields for every request (for instance vLLM's `{"chat_template_kwargs": {"enable_thinking":
            False}}`). Part of the fingerprint: put no secret here.
        show_progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar over requests.
    """

    answers = ("1", "2")

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        template: PairwiseTemplate | str = "helpfulness",
        *,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        client: Any = None,
        tokenizer: Any = None,
        use_chat_template: bool = False,
        chat_template_kwargs: dict | None = None,
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
        self.template = get_template(template)
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
            tokenizer=tokenizer,
            use_chat_template=use_chat_template,
            chat_template_kwargs=chat_template_kwargs,
        )
        self.answer_strings: tuple[str, ...] | None = None
        if self.lm is not None:
            example = self.lm.render(self.template.request("x", "y", "z", chain_of_thought), self.template.prefill())
            self.answer_tokens = self.lm.resolve_answers(example, list(self.answers))
            if any(len(seq) != 1 for seq in self.answer_tokens.sequences):
                raise ValueError(
                    f"With this tokenizer the answers {self.answers} are not single tokens after the template's "
                    f"ending ({self.answer_tokens.sequences}); a served judge reads one token's log-probabilities. "
                    "Change the template's `ending`."
                )
            self.answer_strings = tuple(self.lm.tokenizer.decode(list(seq)) for seq in self.answer_tokens.sequences)

    def position_one_probability(self, result: ChatResult) -> tuple[float | None, str | None]:
        """Probability that the response shown first is preferred, from one answer; or `None` and why."""
        if result.error is not None:
            return None, result.error
        if self.answer_strings is not None:  # completions: the exact answer tokens
            top = result.top_logprobs or {}
            found = {a: top[s] for a, s in zip(self.answers, self.answer_strings, strict=True) if s in top}
        else:
            found = answer_logprobs(result.top_logprobs, self.answers)
        if found:
            top_value = max(found.values())
            weights = {a: math.exp(found[a] - top_value) if a in found else 0.0 for a in self.answers}
            p_one = weights["1"] / (weights["1"] + weights["2"])
        elif self.logprobs:
            return None, f"neither answer is among the top {self.top_logprobs} first tokens"
        else:
            answer = text_answer(result.content, self.answers)
            if answer is None:
                return None, f"the judge answered {str(result.content)[:80]!r}, which is neither 1 nor 2"
            p_one = 1.0 if answer == "1" else 0.0
        return (1.0 - p_one if self.template.asks_for_worse else p_one), None

    def _requests(self, prompts, completions_a, completions_b) -> list[str]:
        requests = []
        for prompt, a, b in zip(prompts, completions_a, completions_b, strict=True):
            context, text_a, text_b = format_context(prompt), format_completion(a), format_completion(b)
            requests.append(self.template.request(context, text_a, text_b, self.chain_of_thought))
            requests.append(self.template.request(context, text_b, text_a, self.chain_of_thought))
        return requests

    def _judgement(self, first: tuple[ChatResult, str | None], second: tuple[ChatResult, str | None]):
        p_first, first_reason = self.position_one_probability(first[0])
        p_second, second_reason = self.position_one_probability(second[0])
        if p_first is None or p_second is None:
            final = first[0].final and second[0].final
            return PairwiseJudgement.unjudged(first_reason or second_reason, final=final)
        return PairwiseJudgement.from_orders(p_first, 1.0 - p_second, first[1], second[1])

    def _judge_pairs(
        self, prompts: list[Prompt], completions_a: list[Completion], completions_b: list[Completion]
    ) -> list[PairwiseJudgement]:
        answers = self._answers(self._requests(prompts, completions_a, completions_b))
        return [self._judgement(answers[2 * i], answers[2 * i + 1]) for i in range(len(prompts))]

    def _judge_pairs_streaming(
        self,
        prompts: list[Prompt],
        completions_a: list[Completion],
        completions_b: list[Completion],
        on_judged: Callable[[list[int], list[PairwiseJudgement]], None],
        chunk_size: int,
    ) -> None:
        # One pool of requests over every pair: each pair is handed over as soon as both of its orders are answered.
        halves: dict[int, dict[int, tuple]] = {}
        lock = threading.Lock()

        def done(index: int, answer: tuple) -> None:
            pair = index // 2
            with lock:
                both = halves.setdefault(pair, {})
                both[index % 2] = answer
                if len(both) < 2:
                    return
                del halves[pair]
            on_judged([pair], [self._judgement(both[0], both[1])])

        self._answers(self._requests(prompts, completions_a, completions_b), done)

    def fingerprint_fields(self) -> dict[str, Any]:
        return {"judge": "OpenAIJudge", **self._chat_fingerprint()}

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(model={self.model!r}, client={self.client!r}, endpoint={self.endpoint!r}, "
            f"template={self.template.name!r}, chain_of_thought={self.chain_of_thought})"
        )

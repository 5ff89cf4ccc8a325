"""Judges behind any OpenAI-compatible endpoint (OpenAI, vLLM, TGI, llama.cpp, `transformers serve`):
[`OpenAIJudge`] (pairwise) and [`OpenAIScoreJudge`] (direct RLAIF scores), on the settings, requests and answer
reading of [`ChatJudgeMixin`]."""

import math
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..data_utils import Completion, Prompt
from .base import PairwiseJudge, ScoringJudge
from .causal_lm import JudgeLM
from .chat_judge import ChatJudgeMixin, answer_logprobs, text_answer
from .judgement import PairwiseJudgement, ScoreJudgement
from .openai_client import ChatResult
from .templates import PairwiseTemplate, ScoreTemplate, get_template


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
        tokenizer (`str` or [`~transformers.PreTrainedTokenizerBase`], *optional*):
            The served model's tokenizer: render prompts here and use the completions endpoint (see above).
        use_chat_template (`bool`, *optional*, defaults to `False`):
            With `tokenizer`: render the request through its chat template with the ending pre-filled, as
            `TransformersJudge(use_chat_template=True)` does (instruct models).
        chat_template_kwargs (`dict`, *optional*):
            With `tokenizer`: extra arguments for the chat template.
        **settings:
            The judge's other settings, by keyword:

            - `chain_of_thought` (`bool`, defaults to `False`): first ask for a rationale (one per order), then for
              the answer with the rationale in context.
            - `system_prompt` (`str`): chat endpoint only, a system message sent before the request.
            - `logprobs` (`bool`, defaults to `True`): ask for log-probabilities (soft labels); `False` for hard
              labels from the answer text.
            - `top_logprobs` (`int`, defaults to `20`): how many candidate first tokens to ask for (20 is the most
              vLLM and OpenAI return by default).
            - `rationale_max_tokens` (`int`, defaults to `512`): longest rationale, with chain of thought.
            - `extra_body` (`dict`): extra JSON fields for every request (for instance vLLM's
              `{"chat_template_kwargs": {"enable_thinking": False}}`). Part of the fingerprint: put no secret here.
            - the connection settings `api_key`, `api_key_env`, `client`, `max_concurrency`, `requests_per_second`,
              `timeout`, `max_retries`, `show_progress`, passed to the judge's [`JudgeClient`] and documented there:
              the API key (default `$OPENAI_API_KEY`; never logged, printed, stored, or part of the fingerprint) or
              an `openai.OpenAI`/`openai.AsyncOpenAI` client of your own; at most `max_concurrency` (32) requests in
              flight and `requests_per_second` started per second; `timeout` (60 s) per request on the server, not
              counting the wait behind this judge's other requests; `max_retries` (6), by the `openai` client; a
              progress bar over requests.
    """

    answers = ("1", "2")

    fingerprint_name = "OpenAIJudge"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        template: PairwiseTemplate | str = "helpfulness",
        *,
        tokenizer: Any = None,
        use_chat_template: bool = False,
        chat_template_kwargs: dict | None = None,
        **settings: Any,
    ):
        template = get_template(template)
        if tokenizer is None and (use_chat_template or chat_template_kwargs):
            raise ValueError(
                "`use_chat_template`/`chat_template_kwargs` render the prompt here, which needs the model's "
                "`tokenizer` (a path or a tokenizer object)."
            )
        if tokenizer is not None:
            self.lm = JudgeLM(
                tokenizer if isinstance(tokenizer, str) else model,
                None if isinstance(tokenizer, str) else tokenizer,
                use_chat_template=use_chat_template,
                chat_template_kwargs=chat_template_kwargs,
                name=model,
            )
        super().__init__(model, base_url, template, **settings)
        self.answer_strings: tuple[str, ...] | None = None
        if self.lm is not None:
            if self.system_prompt is not None:
                raise ValueError(
                    "`system_prompt` is for chat requests; with a `tokenizer` the prompt is rendered as the local "
                    "judge renders it (put instructions in the template's preamble)."
                )
            if not self.logprobs:
                raise ValueError("With a `tokenizer` the judge reads the answer tokens' log-probabilities: keep them.")
            example = self.lm.render(
                self.template.request("x", "y", "z", self.chain_of_thought), self.template.prefill()
            )
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
        return self.template.requests_for(prompts, completions_a, completions_b, self.chain_of_thought)

    def _judgement(self, first: tuple[ChatResult, str | None], second: tuple[ChatResult, str | None]):
        p_first, first_reason = self.position_one_probability(first[0])
        p_second, second_reason = self.position_one_probability(second[0])
        if p_first is None or p_second is None:
            final = first[0].final and second[0].final
            judgement = PairwiseJudgement.unjudged(first_reason or second_reason, final=final)
        else:
            judgement = PairwiseJudgement.from_orders(p_first, 1.0 - p_second, first[1], second[1])
        # The answers' tokens (a rationale's request, with chain of thought, is not counted here).
        return replace(
            judgement,
            prompt_tokens=first[0].prompt_tokens + second[0].prompt_tokens,
            completion_tokens=first[0].completion_tokens + second[0].completion_tokens,
        )

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

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(model={self.model!r}, client={self.client!r}, endpoint={self.endpoint!r}, "
            f"template={self.template.name!r}, chain_of_thought={self.chain_of_thought})"
        )


class OpenAIScoreJudge(ChatJudgeMixin, ScoringJudge):
    """Score completions with a model behind an OpenAI-compatible chat-completions API.

    With `logprobs`, the expected score is computed over the score tokens found among the first answer token's
    `top_logprobs` (renormalized over those found); an answer without log-probabilities raises [`JudgeError`].
    With `logprobs=False`, a reply that is exactly one of the scores is used as is; anything else gives `None` with a
    reason. A server whose tokenizer splits "10" into "1", "0" cannot tell "1" from "10" in the first token's
    log-probabilities; use a scale of single tokens (e.g. 0-9) with such servers. Requests go to the chat endpoint
    only (a scoring judge's prompt is not rendered client-side).

    Args:
        model (`str`):
            The model name the server knows.
        base_url (`str`, *optional*):
            The API root; defaults to `$OPENAI_BASE_URL`, else OpenAI's API.
        template ([`ScoreTemplate`], *optional*):
            The question; by default asks for a SCORE from 1 to 10.
        **settings:
            As for [`OpenAIJudge`] (the chat endpoint only: no `tokenizer`).
    """

    fingerprint_name = "OpenAIScoreJudge"
    # Two tokens leave room for a score such as "10" that is one token for some tokenizers and two for others.
    answer_max_tokens = 2

    def __init__(
        self, model: str, base_url: str | None = None, template: ScoreTemplate | None = None, **settings: Any
    ):
        super().__init__(model, base_url, template or ScoreTemplate(), **settings)

    def judgement_from(self, result: ChatResult, rationale: str | None = None) -> ScoreJudgement:
        """A score from one answer: top log-probabilities when present, else the exact answer text; with the tokens
        the answer cost."""
        judgement = self._score_from(result, rationale)
        return replace(judgement, prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)

    def _score_from(self, result: ChatResult, rationale: str | None) -> ScoreJudgement:
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
        requests = self.template.requests_for(prompts, completions, self.chain_of_thought)
        return [self.judgement_from(result, rationale) for result, rationale in self._answers(requests)]

    def _score_streaming(self, prompts, completions, on_judged, chunk_size) -> None:
        requests = self.template.requests_for(prompts, completions, self.chain_of_thought)
        self._answers(requests, lambda i, answer: on_judged([i], [self.judgement_from(*answer)]))

    def __repr__(self) -> str:
        return f"OpenAIScoreJudge(model={self.model!r}, client={self.client!r})"

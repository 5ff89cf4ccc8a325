"""A scoring judge as a TRL reward function (direct RLAIF inside GRPOTrainer or RLOOTrainer)."""

import asyncio
from collections.abc import Callable

from .base import ScoringJudge
from .cached import score_cached
from .store import LabelStore


def judge_reward_func(
    judge: ScoringJudge,
    *,
    store: LabelStore | None = None,
    asynchronous: bool = False,
    name: str | None = None,
    chunk_size: int = 64,
) -> Callable:
    """Wrap a scoring judge as an entry of `reward_funcs` for TRL's `GRPOTrainer` or `RLOOTrainer`.

    The function follows TRL's reward-function signature, `f(prompts, completions, **kwargs) -> list[float | None]`:
    one score in [-1, 1] per completion, `None` where the judge cannot say (TRL turns `None` into NaN and ignores
    it). With `asynchronous=True` it is a coroutine function, which TRL runs concurrently with the other async reward
    functions; an HTTP judge then sends its requests without blocking a thread.

    Example:

    ```python
    from trl import GRPOTrainer
    from trl_won.rlaif import OpenAIScoreJudge, judge_reward_func

    judge = OpenAIScoreJudge("Qwen/Qwen2.5-7B-Instruct", base_url="http://localhost:8000/v1")
    trainer = GRPOTrainer(model=..., reward_funcs=[judge_reward_func(judge, asynchronous=True)], ...)
    ```

    Args:
        judge ([`ScoringJudge`]):
            The scoring judge (e.g. [`TransformersScoreJudge`], [`OpenAIScoreJudge`]).
        store ([`LabelStore`], *optional*):
            Label store: scores already computed (e.g. before a crash) are reused.
        asynchronous (`bool`, *optional*, defaults to `False`):
            Return an `async` function.
        name (`str`, *optional*):
            The function's `__name__`, which TRL uses in its logged metrics; defaults to `"rlaif_judge"`.
        chunk_size (`int`, *optional*, defaults to `64`):
            Completions per judge call and per store transaction.
    """
    if not isinstance(judge, ScoringJudge):
        raise TypeError(
            f"`judge` must be a scoring judge (with `score_completions`), got {type(judge).__name__}. A pairwise "
            "judge compares two completions and cannot score one alone."
        )

    if asynchronous:

        async def reward_func(prompts, completions, **kwargs) -> list[float | None]:
            if store is None:
                return [j.score for j in await judge.ascore_completions(prompts, completions)]
            judgements = await asyncio.to_thread(score_cached, judge, prompts, completions, store, chunk_size)
            return [j.score for j in judgements]

    else:

        def reward_func(prompts, completions, **kwargs) -> list[float | None]:
            return [j.score for j in score_cached(judge, prompts, completions, store, chunk_size)]

    reward_func.__name__ = reward_func.__qualname__ = name or "rlaif_judge"
    reward_func.judge = judge
    reward_func.fingerprint = judge.fingerprint  # identifies the scores across runs (e.g. RRHF's saved rewards)
    return reward_func

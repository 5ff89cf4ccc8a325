"""The base preference model, and how it turns one prompt's responses into a pair: score, select, filter.

1. **Preference models.** One interface over the three kinds of base preference model West-of-N can label with:

   - a sequence-classification reward model (object or path), scored with [`~trl_won.rewards.RewardModelScorer`];
   - reward functions with TRL's GRPO signature, e.g. `f(prompts, completions) -> list[float]` (several are summed
     with `reward_weights`);
   - a pairwise judge, `judge(prompts, completions_a, completions_b) -> list[float | None]`, giving P(a preferred
     over b) or `None` when it cannot say.

   The first two are pointwise (one score per response, [`PointwisePreferenceModel`]); a judge is pairwise
   ([`PairwisePreferenceModel`]). Completions are passed in the prompt's format: strings for standard prompts, lists
   of assistant messages for conversational ones.

2. **Selection from scores.** Picking a (chosen, rejected) pair from one prompt's pointwise scores. A pair is only
   formed when the base model strictly prefers the chosen response: ties give no pair (the `reason` says why). The
   confidence of a pair is the base model's P(chosen > rejected): for a pointwise model
   `sigmoid(r_chosen - r_rejected)`, for a pairwise judge its own probability.

3. **Knockout tournaments** (a judge). A pairwise judge need not be transitive, so there is no score to sort by. As in
   the West-of-N paper, the best response is the winner of a knockout bracket; the worst is found by a second bracket
   in which the loser of each match advances. Both brackets share their first round: the N responses are paired up
   once, winners go on in the best bracket, losers in the worst one. With an odd number of entrants the last one gets
   a bye.

   Cost per prompt, with N responses (`strategy="west_of_n"`):

   - first round: floor(N/2) comparisons; then each bracket has ceil(N/2) entrants, so ceil(N/2) - 1 comparisons each;
   - the confidence P(best > worst): one more comparison, unless these two already met in a bracket.

   So at most floor(N/2) + 2 * (ceil(N/2) - 1) + 1 comparisons: 95 for N = 64, 11 for N = 8, 1 for N = 2.
   `strategy="best_random"` costs at most (N - 1) + 1 and `"naive"` 1. Each round of every prompt's tournament is sent
   to the judge in one call, so a batch of prompts costs 1 + ceil(log2(ceil(N/2))) + 1 judge calls (7 for N = 64).

   A match the judge abstains on (`None`) or calls even (0.5) is won by the response that was sampled first. Samples
   are exchangeable, so this is as fair as a coin flip, and it keeps the result deterministic. If the judge abstains
   on the final confidence comparison, the prompt yields no pair (see [`selection_from_judgement`]). The tournament
   code is pure: `compare` is any function from a list of `(prompt, a, b)` index triples to probabilities.

4. **Filters.** Pure functions: lists of numbers in, a keep mask (list of bools) out.

   - Confidence: keep a pair when the base model's P(chosen > rejected) is at least a threshold, either absolute or
     the `q`-quantile of the confidences of the generated pairs (offline: all of them; online: a window of recent
     ones).
   - Likelihood: keep a pair when both responses' per-token mean log-likelihood under the policy lies in
     `[min_logp, max_logp]`, so that both stay in the policy's distribution.

   Each filter is computed on every pair independently of the others, so a pair can be removed by several filters.
"""

import inspect
import math
import random
from collections import deque
from collections.abc import Callable, Sequence

import torch

from ..data_utils import Completion, Prompt, as_real
from ..rewards import (
    RewardModelScorer,
    as_reward_funcs,
    reward_func_identity,
    reward_func_name,
    weighted_rewards,
)
from ..utils import run_coroutine
from .results import ABSTAINED, INCONSISTENT, TIE, Selection


class PointwisePreferenceModel:
    """Scores each response on its own: a reward model and/or reward functions, summed with weights.

    Args:
        reward_funcs (`list[Callable]`):
            Reward functions (a [`~trl_won.rewards.RewardModelScorer`] is one).
        reward_weights (`list[float]`, *optional*):
            One weight per function, defaults to 1 each.
    """

    pairwise = False

    def __init__(self, reward_funcs: list[Callable], reward_weights: Sequence[float] | None = None):
        if reward_weights is not None and len(reward_weights) != len(reward_funcs):
            raise ValueError(
                f"`reward_weights` has {len(reward_weights)} entries but there are {len(reward_funcs)} reward "
                "functions; give one weight per reward function."
            )
        self.reward_funcs = reward_funcs
        self.reward_weights = list(reward_weights) if reward_weights is not None else None

    def score(self, prompts: Sequence[Prompt], completions: Sequence[Completion]) -> list[float]:
        """One finite score per completion (errors name the function that returned a wrong count or a NaN)."""
        return weighted_rewards(self.reward_funcs, prompts, completions, self.reward_weights)

    def models(self) -> list[torch.nn.Module]:
        return [f.model for f in self.reward_funcs if isinstance(f, RewardModelScorer)]

    def describe(self) -> dict:
        """What identifies this model in a run's manifest."""
        return {
            "kind": "pointwise",
            "functions": [_identity(f) for f in self.reward_funcs],
            "weights": self.reward_weights,
        }


class PairwisePreferenceModel:
    """Compares two responses with a pairwise judge and checks its answers.

    Args:
        judge (`Callable`):
            `judge(prompts, completions_a, completions_b) -> list[float | None]` (sync or async): the probability that
            each completion in `completions_a` is preferred to its counterpart in `completions_b`, or `None` when the
            judge cannot say.
    """

    pairwise = True

    def __init__(self, judge: Callable):
        if not callable(judge):
            raise TypeError(
                "`judge` must be callable as judge(prompts, completions_a, completions_b), got "
                f"{type(judge).__name__}."
            )
        self.judge = judge

    @property
    def name(self) -> str:
        return reward_func_name(self.judge)

    def compare(
        self, prompts: Sequence[Prompt], completions_a: Sequence[Completion], completions_b: Sequence[Completion]
    ) -> list[float | None]:
        """P(a preferred over b) for each pair, `None` where the judge abstained."""
        result = self.judge(list(prompts), list(completions_a), list(completions_b))
        if inspect.isawaitable(result):
            result = run_coroutine(result)
        result = list(result)
        if len(result) != len(prompts):
            raise ValueError(
                f"The judge {self.name!r} returned {len(result)} results for {len(prompts)} pairs. It must return one "
                "probability (or None) per pair, in order."
            )
        checked = []
        for i, value in enumerate(result):
            if value is not None and (as_real(value) is None or not math.isfinite(as_real(value))):
                raise ValueError(
                    f"The judge {self.name!r} returned {value!r} for pair {i}; it must return a probability in [0, 1] "
                    "or None (cannot say)."
                )
            value = None if value is None else as_real(value)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(
                    f"The judge {self.name!r} returned {value} for pair {i}, outside [0, 1]. It must return "
                    "P(completion a preferred over completion b)."
                )
            checked.append(None if value is None else float(value))
        return checked

    def models(self) -> list[torch.nn.Module]:
        return []

    def describe(self) -> dict:
        return {"kind": "pairwise", "judge": _identity(self.judge)}


def _identity(func) -> str:
    # A reward model object by its weights digest, a judge by its fingerprint, a plain function by its source; other
    # callables by their name only (changing one then needs a new `pairs_dir`, see the docs).
    identity = reward_func_identity(func)
    if identity is not None:
        return identity
    module = getattr(func, "__module__", None) or type(func).__module__
    return f"{module}.{reward_func_name(func)}"


def build_preference_model(
    reward_model=None,
    reward_funcs=None,
    judge=None,
    *,
    reward_processing_class=None,
    reward_weights: Sequence[float] | None = None,
    scoring_batch_size: int = 16,
    quantization_config=None,
    model_init_kwargs: dict | None = None,
    chat_template_kwargs: dict | None = None,
    share_prompt: bool = False,
) -> PointwisePreferenceModel | PairwisePreferenceModel:
    """Build the base preference model from exactly one of `reward_model`, `reward_funcs` and `judge`.

    Args:
        reward_model (`str` or [`~transformers.PreTrainedModel`], *optional*):
            A sequence-classification reward model (`num_labels=1`) or a path/hub id to load it from.
        reward_funcs (`Callable` or `list`, *optional*):
            One or several reward functions (reward models and paths are accepted too, as in TRL's GRPO).
        judge (`Callable`, *optional*):
            A pairwise judge.
        reward_processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Tokenizer of `reward_model`; loaded from its path when omitted.
        reward_weights (`Sequence[float]`, *optional*):
            Weights of `reward_funcs`.
        scoring_batch_size (`int`, *optional*, defaults to `16`):
            Sequences per reward-model forward pass.
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization of `reward_model` when loaded from a path.
        model_init_kwargs (`dict`, *optional*):
            `from_pretrained` arguments for `reward_model` given as a path.
        chat_template_kwargs (`dict`, *optional*):
            Extra arguments for the reward model's chat template.
        share_prompt (`bool`, *optional*, defaults to `False`):
            Reward models score the responses of one prompt with their shared first tokens run once (see
            [`~trl_won.rewards.RewardModelScorer.score_groups`]).
    """
    given = [
        name
        for name, value in (("reward_model", reward_model), ("reward_funcs", reward_funcs), ("judge", judge))
        if value is not None
    ]
    if len(given) != 1:
        raise ValueError(
            "Give exactly one base preference model: `reward_model=` (a sequence-classification reward model or its "
            "path), `reward_funcs=` (reward functions f(prompts, completions) -> list[float]) or `judge=` (a pairwise "
            f"judge judge(prompts, completions_a, completions_b) -> list[float | None]). Got {given or 'none'}."
        )
    scorer_kwargs = dict(
        batch_size=scoring_batch_size,
        model_init_kwargs=model_init_kwargs,
        chat_template_kwargs=chat_template_kwargs,
        share_prompt=share_prompt,
    )
    if judge is not None:
        if reward_weights is not None:
            raise ValueError("`reward_weights` applies to reward functions; it cannot be used with a `judge`.")
        return PairwisePreferenceModel(judge)
    if reward_model is not None:
        if isinstance(reward_model, (list, tuple)) or not isinstance(reward_model, (str, torch.nn.Module)):
            raise TypeError(
                "`reward_model` must be one sequence-classification model or a path to one, got "
                f"{type(reward_model).__name__}. Pass reward functions (or several models) as `reward_funcs=`."
            )
        scorer = RewardModelScorer(
            reward_model, reward_processing_class, quantization_config=quantization_config, **scorer_kwargs
        )
        return PointwisePreferenceModel([scorer], reward_weights)
    if quantization_config is not None:
        raise ValueError("`reward_quantization_config` applies to `reward_model=`; load quantized models yourself.")
    funcs = as_reward_funcs(reward_funcs, reward_processing_class, **scorer_kwargs)
    return PointwisePreferenceModel(funcs, reward_weights)


# Selection from pointwise scores


def sigmoid(x: float) -> float:
    """The logistic function, computed without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def random_other(num_candidates: int, exclude: int, rng: random.Random) -> int:
    """A uniformly random index in `range(num_candidates)` other than `exclude`."""
    pick = rng.randrange(num_candidates - 1)
    return pick + 1 if pick >= exclude else pick


def select_from_scores(scores: Sequence[float], strategy: str, rng: random.Random | None = None) -> Selection:
    """Pick the pair of one prompt from pointwise scores (reward model or reward functions).

    - `"west_of_n"`: chosen = the highest score, rejected = the lowest (the first one in order among equals).
    - `"best_random"`: chosen = the highest score, rejected = a uniformly random other response (drawn with `rng`).
    - `"naive"`: two responses, the higher-scored one is chosen.

    Equal scores for chosen and rejected give no pair (`reason="tie"`).

    Args:
        scores (`Sequence[float]`):
            One score per response, at least two.
        strategy (`str`):
            `"west_of_n"`, `"best_random"` or `"naive"`.
        rng (`random.Random`, *optional*):
            Random source for `"best_random"`.

    Returns:
        [`Selection`]: indices into `scores` and the confidence `sigmoid(score[chosen] - score[rejected])`.
    """
    if len(scores) < 2:
        raise ValueError(f"A pair needs at least 2 scored responses, got {len(scores)}.")
    best = max(range(len(scores)), key=scores.__getitem__)
    if strategy == "west_of_n":
        other = min(range(len(scores)), key=scores.__getitem__)
    elif strategy == "best_random":
        if rng is None:
            raise ValueError("strategy='best_random' needs a random generator `rng`.")
        other = random_other(len(scores), best, rng)
    elif strategy == "naive":
        if len(scores) != 2:
            raise ValueError(f"strategy='naive' labels exactly 2 responses, got {len(scores)}.")
        other = 1 - best
    else:
        raise ValueError(f"Unknown strategy {strategy!r}; use 'west_of_n', 'best_random' or 'naive'.")
    margin = scores[best] - scores[other]
    if margin == 0:
        return Selection(best, other, 0.5, TIE)
    return Selection(best, other, sigmoid(margin))


def selection_from_judgement(chosen: int, rejected: int, probability: float | None) -> Selection:
    """The pair (chosen, rejected) given the judge's P(chosen > rejected) from a direct comparison.

    No pair when the judge abstained (`None`), when chosen and rejected are the same response, when the judge is
    undecided (0.5), or when it prefers `rejected` (possible with a non-transitive judge).
    """
    if chosen == rejected:
        return Selection(chosen, rejected, None, INCONSISTENT)
    if probability is None:
        return Selection(chosen, rejected, None, ABSTAINED)
    if probability == 0.5:
        return Selection(chosen, rejected, probability, TIE)
    if probability < 0.5:
        return Selection(chosen, rejected, probability, INCONSISTENT)
    return Selection(chosen, rejected, probability)


# Knockout tournaments over a pairwise judge

Match = tuple[int, int]
CompareFn = Callable[[list[tuple[int, int, int]]], list[float | None]]


def _pairs(entrants: list[int]) -> tuple[list[Match], list[int]]:
    matches = [(entrants[i], entrants[i + 1]) for i in range(0, len(entrants) - 1, 2)]
    bye = [entrants[-1]] if len(entrants) % 2 else []
    return matches, bye


class Knockout:
    """Knockout brackets over `num_candidates` responses of one prompt.

    Call [`pending`] for the matches of the current round, then [`record`] with the judge's P(first > second) for each
    (or `None`), until [`done`]. Every comparison made is kept in `results`.

    Args:
        num_candidates (`int`):
            Number of responses (at least 2).
        find_worst (`bool`, *optional*, defaults to `True`):
            Also find the worst response, with a worst bracket sharing the first round with the best bracket.
    """

    def __init__(self, num_candidates: int, find_worst: bool = True):
        if num_candidates < 2:
            raise ValueError(f"A tournament needs at least 2 responses, got {num_candidates}.")
        self.num_candidates = num_candidates
        self.find_worst = find_worst
        self.results: dict[Match, float | None] = {}
        self._shared_round = find_worst
        self._best = list(range(num_candidates))
        self._worst = list(range(num_candidates)) if find_worst else []
        self._pending: list[tuple[str, Match]] = []

    @property
    def done(self) -> bool:
        return not self._shared_round and len(self._best) <= 1 and len(self._worst) <= 1

    @property
    def best(self) -> int:
        if not self.done:
            raise RuntimeError("The tournament is not finished.")
        return self._best[0]

    @property
    def worst(self) -> int | None:
        if not self.done:
            raise RuntimeError("The tournament is not finished.")
        return self._worst[0] if self.find_worst else None

    @property
    def abstentions(self) -> int:
        return sum(p is None for p in self.results.values())

    def pending(self) -> list[Match]:
        """The matches of the current round (empty when done)."""
        if self._shared_round:
            self._pending = [("shared", m) for m in _pairs(self._best)[0]]
        else:
            self._pending = [("best", m) for m in _pairs(self._best)[0]] if len(self._best) > 1 else []
            if len(self._worst) > 1:
                self._pending += [("worst", m) for m in _pairs(self._worst)[0]]
        return [match for _, match in self._pending]

    def record(self, probabilities: Sequence[float | None]) -> None:
        """Record P(first > second) (or `None`) for each match returned by the last [`pending`] call."""
        if len(probabilities) != len(self._pending):
            raise ValueError(f"Expected {len(self._pending)} results, got {len(probabilities)}.")
        advancing: dict[str, list[int]] = {"shared": [], "best": [], "worst": []}
        eliminated: list[int] = []  # losers of the shared round, who enter the worst bracket
        for (bracket, (a, b)), p in zip(self._pending, probabilities, strict=True):
            self.results[(a, b)] = p
            decided = p is not None and p != 0.5
            if bracket == "worst":  # the loser advances; undecided keeps the earlier sample
                advancing[bracket].append(b if decided and p > 0.5 else a)
            else:  # the winner advances; undecided keeps the earlier sample
                winner = b if decided and p < 0.5 else a
                advancing[bracket].append(winner)
                if bracket == "shared":
                    eliminated.append(b if winner == a else a)
        if self._shared_round:
            bye = _pairs(self._best)[1]
            self._best, self._worst = advancing["shared"] + bye, eliminated + bye
            self._shared_round = False
        else:
            if len(self._best) > 1:
                self._best = advancing["best"] + _pairs(self._best)[1]
            if len(self._worst) > 1:
                self._worst = advancing["worst"] + _pairs(self._worst)[1]
        self._pending = []

    def probability(self, a: int, b: int) -> tuple[bool, float | None]:
        """Whether `a` and `b` met, and P(a > b) if they did (`None` if the judge abstained)."""
        if (a, b) in self.results:
            return True, self.results[(a, b)]
        if (b, a) in self.results:
            p = self.results[(b, a)]
            return True, None if p is None else 1.0 - p
        return False, None


def run_knockouts(num_candidates: Sequence[int], compare: CompareFn, find_worst: bool = True) -> list[Knockout]:
    """Play one knockout per prompt, sending each round of all prompts to `compare` in one call.

    Args:
        num_candidates (`Sequence[int]`):
            Number of responses of each prompt.
        compare (`Callable`):
            Maps a list of `(prompt, a, b)` to P(response a of that prompt preferred over response b), or `None`.
        find_worst (`bool`, *optional*, defaults to `True`):
            Also find each prompt's worst response.

    Returns:
        `list[Knockout]`: The finished tournaments, one per prompt.
    """
    tournaments = [Knockout(n, find_worst) for n in num_candidates]
    while True:
        rounds = [t.pending() for t in tournaments]
        requests = [(prompt, a, b) for prompt, matches in enumerate(rounds) for a, b in matches]
        if not requests:
            return tournaments
        outcomes = list(compare(requests))
        if len(outcomes) != len(requests):
            raise ValueError(f"The comparison function returned {len(outcomes)} results for {len(requests)} pairs.")
        start = 0
        for tournament, matches in zip(tournaments, rounds, strict=True):
            if matches:
                tournament.record(outcomes[start : start + len(matches)])
                start += len(matches)


def select_with_judge(
    num_candidates: Sequence[int],
    compare: CompareFn,
    strategy: str,
    rngs: Sequence[random.Random] | None = None,
) -> tuple[list[Selection], list[Knockout]]:
    """Pick each prompt's pair with a pairwise judge: knockouts, then one batched call for the missing confidences.

    Args:
        num_candidates (`Sequence[int]`):
            Number of responses of each prompt.
        compare (`Callable`):
            See [`run_knockouts`].
        strategy (`str`):
            `"west_of_n"` (tournament best vs tournament worst), `"best_random"` (tournament best vs a random other
            response, drawn with that prompt's `rngs` entry) or `"naive"` (two responses, one match).
        rngs (`Sequence[random.Random]`, *optional*):
            One random source per prompt, needed for `"best_random"`.

    Returns:
        `tuple[list[Selection], list[Knockout]]`: the selections and the tournaments (with every comparison made).
    """
    if strategy == "naive" and any(n != 2 for n in num_candidates):
        raise ValueError("strategy='naive' labels exactly 2 responses per prompt.")
    if strategy not in ("west_of_n", "best_random", "naive"):
        raise ValueError(f"Unknown strategy {strategy!r}; use 'west_of_n', 'best_random' or 'naive'.")
    if strategy == "best_random" and rngs is None:
        raise ValueError("strategy='best_random' needs one random generator per prompt (`rngs`).")
    tournaments = run_knockouts(num_candidates, compare, find_worst=strategy != "best_random")
    pairs = []
    for prompt, t in enumerate(tournaments):
        rejected = t.worst if strategy != "best_random" else random_other(t.num_candidates, t.best, rngs[prompt])
        pairs.append((t.best, rejected))
    missing = [
        (prompt, chosen, rejected)
        for prompt, (chosen, rejected) in enumerate(pairs)
        if chosen != rejected and not tournaments[prompt].probability(chosen, rejected)[0]
    ]
    if missing:
        outcomes = list(compare(missing))
        if len(outcomes) != len(missing):
            raise ValueError(f"The comparison function returned {len(outcomes)} results for {len(missing)} pairs.")
        for (prompt, a, b), p in zip(missing, outcomes, strict=True):
            tournaments[prompt].results[(a, b)] = p
    selections = [
        selection_from_judgement(chosen, rejected, tournaments[prompt].probability(chosen, rejected)[1])
        for prompt, (chosen, rejected) in enumerate(pairs)
    ]
    return selections, tournaments


# Filters


def quantile(values: Sequence[float], q: float) -> float:
    """The `q`-quantile of `values` with linear interpolation between order statistics (numpy's default method).

    For sorted values `x_0 <= ... <= x_{m-1}` it is `x_i + (x_{i+1} - x_i) * f` where `q * (m - 1) = i + f`.
    """
    if not values:
        raise ValueError("The quantile of an empty list is undefined.")
    if not 0 <= q <= 1:
        raise ValueError(f"The quantile level must be in [0, 1], got {q}.")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def confidence_mask(confidences: Sequence[float], threshold: float) -> list[bool]:
    """Keep the pairs whose confidence is at least `threshold`."""
    return [c >= threshold for c in confidences]


def quantile_confidence_mask(confidences: Sequence[float], q: float) -> tuple[list[bool], float | None]:
    """Keep the pairs whose confidence is at least the `q`-quantile of `confidences`.

    Returns:
        `tuple[list[bool], float | None]`: The keep mask and the threshold used (`None` when there is no pair).
    """
    if not confidences:
        return [], None
    threshold = quantile(confidences, q)
    return confidence_mask(confidences, threshold), threshold


def likelihood_mask(
    chosen_logps: Sequence[float],
    rejected_logps: Sequence[float],
    min_logp: float | None = None,
    max_logp: float | None = None,
) -> list[bool]:
    """Keep the pairs whose two per-token mean log-likelihoods both lie in `[min_logp, max_logp]` (bounds optional)."""
    low = -math.inf if min_logp is None else min_logp
    high = math.inf if max_logp is None else max_logp
    return [low <= c <= high and low <= r <= high for c, r in zip(chosen_logps, rejected_logps, strict=True)]


class RunningQuantile:
    """The `q`-quantile of the last `window` values seen, for filtering pairs as they are generated (online).

    [`update`] adds a batch of values first and then returns the quantile over the window, so the first batch is
    filtered relative to itself and later batches relative to recent history.

    Args:
        q (`float`): Quantile level in `[0, 1]`.
        window (`int`): Number of most recent values kept.
    """

    def __init__(self, q: float, window: int):
        if not 0 <= q <= 1:
            raise ValueError(f"The quantile level must be in [0, 1], got {q}.")
        if window < 1:
            raise ValueError(f"`window` must be >= 1, got {window}.")
        self.q = q
        self.values: deque[float] = deque(maxlen=window)

    def update(self, values: Sequence[float]) -> float | None:
        """Add `values` and return the current threshold (`None` while no value has been seen)."""
        self.values.extend(values)
        return quantile(list(self.values), self.q) if self.values else None

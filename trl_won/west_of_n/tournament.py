"""Best and worst response under a pairwise judge, by elimination (knockout) tournaments.

A pairwise judge gives P(a preferred over b) and need not be transitive, so there is no score to sort by. As in the
West-of-N paper, the best response is the winner of a knockout bracket; the worst is found by a second bracket in
which the loser of each match advances. Both brackets share their first round: the N responses are paired up once,
winners go on in the best bracket, losers in the worst one. With an odd number of entrants the last one gets a bye.

Cost per prompt, with N responses (`strategy="west_of_n"`):

- first round: floor(N/2) comparisons; then each bracket has ceil(N/2) entrants, so ceil(N/2) - 1 comparisons each;
- the confidence P(best > worst): one more comparison, unless these two already met in a bracket.

So at most floor(N/2) + 2 * (ceil(N/2) - 1) + 1 comparisons: 95 for N = 64, 11 for N = 8, 1 for N = 2.
`strategy="best_random"` costs at most (N - 1) + 1 and `"naive"` 1. Each round of every prompt's tournament is sent
to the judge in one call, so a batch of prompts costs 1 + ceil(log2(ceil(N/2))) + 1 judge calls (7 for N = 64).

A match the judge abstains on (`None`) or calls even (0.5) is won by the response that was sampled first. Samples
are exchangeable, so this is as fair as a coin flip, and it keeps the result deterministic. If the judge abstains on
the final confidence comparison, the prompt yields no pair (see [`selection_from_judgement`]).

Everything here is pure: `compare` is any function from a list of `(prompt, a, b)` index triples to probabilities.
"""

import random
from collections.abc import Callable, Sequence

from .selection import Selection, random_other, selection_from_judgement


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

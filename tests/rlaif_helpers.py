"""Small deterministic judges for the RLAIF tests (no model): they count what they are asked."""

import math

from trl_won.data_utils import completion_text
from trl_won.rlaif import PairwiseJudge, PairwiseJudgement, ScoreJudgement, ScoringJudge


class LengthJudge(PairwiseJudge):
    """Prefers the longer completion: P(a) = sigmoid(len(a) - len(b)) in both orders. Can fail after `fail_after`
    pairs, to simulate a crash."""

    def __init__(self, fail_after: int | None = None, name: str = "length"):
        self.calls = 0
        self.pairs_seen = []
        self.fail_after = fail_after
        self.name = name

    def _judge_pairs(self, prompts, completions_a, completions_b):
        self.calls += 1
        out = []
        for p, a, b in zip(prompts, completions_a, completions_b):
            if self.fail_after is not None and len(self.pairs_seen) >= self.fail_after:
                raise KeyboardInterrupt("simulated Ctrl-C")
            self.pairs_seen.append((p, a, b))
            first = 1 / (1 + math.exp(-(len(completion_text(a)) - len(completion_text(b)))))
            out.append(PairwiseJudgement.from_orders(first, first))
        return out

    def fingerprint_fields(self):
        return {"judge": "LengthJudge", "name": self.name}


class FixedJudge(PairwiseJudge):
    """Returns the given judgements in order, whatever it is asked."""

    def __init__(self, judgements):
        self.judgements = list(judgements)

    def _judge_pairs(self, prompts, completions_a, completions_b):
        taken, self.judgements = self.judgements[: len(prompts)], self.judgements[len(prompts) :]
        return taken

    def fingerprint_fields(self):
        return {"judge": "FixedJudge"}


class LengthScorer(ScoringJudge):
    """Score = tanh(len(completion) / 10 - 1); `None` for empty completions."""

    def __init__(self):
        self.calls = 0

    def _score_completions(self, prompts, completions):
        self.calls += 1
        out = []
        for c in completions:
            text = completion_text(c)
            if not text.strip():
                out.append(ScoreJudgement.unjudged("empty completion"))
            else:
                out.append(ScoreJudgement(score=math.tanh(len(text) / 10 - 1)))
        return out

    def fingerprint_fields(self):
        return {"judge": "LengthScorer"}

"""STAND-INS for the method APIs that are being written in parallel. Everything here is replaced, one for one:

| stand-in                          | replaced by                                                                  |
|-----------------------------------|------------------------------------------------------------------------------|
| `render_judge_request`            | `trl_won.rlaif.PairwiseTemplate(preamble=JUDGE_PREAMBLE)` + `JudgeLM.render` |
| `StandInJudge`                    | `trl_won.rlaif.TransformersJudge(judge, tokenizer, template=...)`            |
| `west_of_n_pairs`                 | the `trl_won.west_of_n` offline generator (west_of_n / naive / best_random)  |
| hard judge labels in `DemoPipeline.rlaif` | the `trl_won.rlaif` soft-label reward trainer                        |

They follow the real APIs' contracts (a pairwise judge is `judge(prompts, a, b) -> list[float]`, West-of-N returns
TRL preference rows) so the pipeline does not change when they are swapped. The judge request mirrors the RLAIF
template's plain-text layout exactly, because the demo judge is trained on these texts and must be read on the same.
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..data_utils import Prompt, as_completion, completion_text
from ..generation import SamplingParams, eval_mode, sample_completions
from .training import answer_token_ids


JUDGE_PREAMBLE = (
    "You rate word lists. Given an instruction and two responses, output 1 or 2 to indicate which response follows "
    "the instruction better."
)
JUDGE_ENDING = "Preferred Response="


def _context(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt.strip()
    return "\n".join(f"{str(m.get('role', '')).title()}: {m.get('content', '')}" for m in prompt)


def render_judge_request(prompt: Prompt, response_1, response_2, preamble: str = JUDGE_PREAMBLE) -> str:
    """The plain-text judge prompt, ending right before the answer "1" or "2" (RLAIF layout, section 2.1)."""
    return (
        f"{preamble.strip()}\n\n"
        f"Context:\n{_context(prompt)}\n\n"
        f"Response 1:\n{completion_text(response_1).strip()}\n\n"
        f"Response 2:\n{completion_text(response_2).strip()}\n\n"
        f"{JUDGE_ENDING}"
    )


@dataclass
class JudgeOrders:
    """A judge's answers for pairs shown in both orders.

    Args:
        p_ab (`list[float]`): P("1") with a shown first, softmaxed over the two answers.
        p_ba (`list[float]`): P("1") with b shown first.
    """

    p_ab: list[float]
    p_ba: list[float]

    @property
    def first_order(self) -> list[float]:
        """P(a preferred) from the (a, b) order alone: what a judge without order averaging says."""
        return list(self.p_ab)

    @property
    def averaged(self) -> list[float]:
        """P(a preferred) averaged over both orders: `(P_ab("1") + P_ba("2")) / 2`."""
        return [(x + (1 - y)) / 2 for x, y in zip(self.p_ab, self.p_ba, strict=True)]


class StandInJudge:
    """A pairwise judge that reads P("1") and P("2") at the answer position of a causal LM (both orders, one batch).

    Replaced by `trl_won.rlaif.TransformersJudge`, which does the same with templates, a label store and chain of
    thought.
    """

    def __init__(self, model, tokenizer, batch_size: int = 64, preamble: str = JUDGE_PREAMBLE):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.preamble = preamble
        self.answer_ids = answer_token_ids(tokenizer, JUDGE_ENDING, ["1", "2"])

    def judge_orders(self, prompts: Sequence[Prompt], a: Sequence, b: Sequence) -> JudgeOrders:
        requests = [render_judge_request(p, x, y, self.preamble) for p, x, y in zip(prompts, a, b, strict=True)]
        requests += [render_judge_request(p, y, x, self.preamble) for p, x, y in zip(prompts, a, b, strict=True)]
        p_one = self._prob_answer_1(requests)
        return JudgeOrders(p_ab=p_one[: len(prompts)], p_ba=p_one[len(prompts) :])

    def __call__(self, prompts: Sequence[Prompt], a: Sequence, b: Sequence) -> list[float]:
        return self.judge_orders(prompts, a, b).averaged

    def _prob_answer_1(self, texts: list[str]) -> list[float]:
        device = next(self.model.parameters()).device
        out = []
        with eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[start : start + self.batch_size], return_tensors="pt", padding=True, padding_side="left"
                ).to(device)
                position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                logits = self.model(**enc, position_ids=position_ids, logits_to_keep=1).logits[:, -1, self.answer_ids]
                logits = logits.float()
                out.extend(torch.softmax(logits, dim=-1)[:, 0].tolist())
        return out


def west_of_n_pairs(
    policy,
    tokenizer,
    score,
    prompts: Sequence[Prompt],
    n: int,
    strategy: str,
    sampling: SamplingParams,
    seed: int,
) -> dict[str, list]:
    """Preference rows built from `n` policy samples per prompt, labeled by the base reward model `score`.

    Strategies (West-of-N paper, section 5): `"west_of_n"` (best vs worst by the base model), `"best_random"` (best vs
    a random other sample), `"naive"` (two samples, ordered by the base model; use `n=2`). Prompts whose chosen and
    rejected texts tie in score or text give no pair.

    Replaced by the `trl_won.west_of_n` offline generator.
    """
    if strategy not in ("west_of_n", "best_random", "naive"):
        raise ValueError(f"Unknown strategy {strategy!r}.")
    samples = sample_completions(policy, tokenizer, prompts, n, sampling, batch_size=256, seed=seed)
    flat_prompts = [p for p, group in zip(prompts, samples, strict=True) for _ in group]
    flat = [as_completion(p, s.text) for p, group in zip(prompts, samples, strict=True) for s in group]
    scores = score(flat_prompts, flat)
    rng = random.Random(seed)
    rows = {"prompt": [], "chosen": [], "rejected": [], "confidence": []}
    for i, prompt in enumerate(prompts):
        group = flat[i * n : (i + 1) * n]
        group_scores = scores[i * n : (i + 1) * n]
        best = max(range(n), key=group_scores.__getitem__)
        if strategy == "west_of_n":
            other = min(range(n), key=group_scores.__getitem__)
        elif strategy == "best_random":
            other = rng.choice([j for j in range(n) if j != best])
        else:
            other = 1 - best if n == 2 else rng.choice([j for j in range(n) if j != best])
        if group_scores[best] == group_scores[other] or completion_text(group[best]) == completion_text(group[other]):
            continue
        rows["prompt"].append(prompt)
        rows["chosen"].append(group[best])
        rows["rejected"].append(group[other])
        rows["confidence"].append(float(torch.sigmoid(torch.tensor(group_scores[best] - group_scores[other]))))
    return rows

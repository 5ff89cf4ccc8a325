"""From saved West-of-N results to a filtered TRL preference dataset.

The output has TRL's preference columns `prompt`, `chosen`, `rejected` (chosen/rejected in the prompt's format) and,
for analysis, `chosen_score`, `rejected_score`, `confidence`, `chosen_logp`, `rejected_logp`; with
`keep_candidates`, also `completions` and `rewards` (every response and its base-model score: RRHF's format).
"""

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset

from ..data_utils import as_completion
from .config import WestOfNConfig
from .filters import confidence_mask, likelihood_mask, quantile_confidence_mask
from .pipeline import PromptResult
from .storage import SHARDS, read_results


PAIR_COLUMNS = ["prompt", "chosen", "rejected", "chosen_score", "rejected_score", "confidence"]
LOGP_COLUMNS = ["chosen_logp", "rejected_logp"]
CANDIDATE_COLUMNS = ["completions", "rewards"]


def filter_results(results: Sequence[PromptResult], args: WestOfNConfig) -> tuple[list[PromptResult], dict]:
    """Apply the confidence and likelihood filters of `args` to the prompts that yielded a pair.

    The confidence quantile is taken over all pairs formed. Each filter is computed on every pair independently.

    Returns:
        `tuple[list[PromptResult], dict]`: The kept pairs, in input order, and a summary of what was removed.
    """
    pairs = [r for r in results if r.is_pair]
    confidences = [r.confidence for r in pairs]
    threshold = args.confidence_threshold
    if args.confidence_quantile is not None:
        keep_confidence, threshold = quantile_confidence_mask(confidences, args.confidence_quantile)
    elif threshold is not None:
        keep_confidence = confidence_mask(confidences, threshold)
    else:
        keep_confidence = [True] * len(pairs)
    if args.min_logp is not None or args.max_logp is not None:
        keep_likelihood = likelihood_mask(
            [r.chosen_logp for r in pairs], [r.rejected_logp for r in pairs], args.min_logp, args.max_logp
        )
    else:
        keep_likelihood = [True] * len(pairs)
    kept = [r for r, a, b in zip(pairs, keep_confidence, keep_likelihood, strict=True) if a and b]
    no_pair = Counter(r.reason for r in results if not r.is_pair)
    summary = {
        "prompts": len(results),
        "pairs_formed": len(pairs),
        "no_pair": dict(sorted(no_pair.items())),
        "removed_by_confidence": keep_confidence.count(False),
        "removed_by_likelihood": keep_likelihood.count(False),
        "pairs_kept": len(kept),
        "confidence_threshold": threshold,
        "mean_confidence_kept": _mean([r.confidence for r in kept]),
        "mean_margin_kept": _mean([r.chosen_score - r.rejected_score for r in kept]),
        "judge_comparisons": sum(len(r.comparisons) for r in results if r.comparisons is not None),
    }
    return kept, summary


def results_to_dataset(pairs: Sequence[PromptResult], keep_candidates: bool = False) -> Dataset:
    """The preference dataset of `pairs` (see the module docstring for the columns)."""
    columns = PAIR_COLUMNS + LOGP_COLUMNS + (CANDIDATE_COLUMNS if keep_candidates else [])
    data = {column: [] for column in columns}
    for r in pairs:
        data["prompt"].append(r.prompt)
        data["chosen"].append(as_completion(r.prompt, r.completions[r.chosen]))
        data["rejected"].append(as_completion(r.prompt, r.completions[r.rejected]))
        for column in ("chosen_score", "rejected_score", "confidence", "chosen_logp", "rejected_logp"):
            data[column].append(getattr(r, column))
        if keep_candidates:
            if r.scores is None:
                raise ValueError(
                    "`keep_candidates=True` outputs each response's reward, but these results were labeled by a "
                    "pairwise judge, which gives none. Use a reward model or reward functions."
                )
            data["completions"].append([as_completion(r.prompt, text) for text in r.completions])
            data["rewards"].append(list(r.scores))
    return Dataset.from_dict(data)


def read_west_of_n_pairs(pairs_dir: str | Path, args: WestOfNConfig | None = None) -> Dataset:
    """Read the results saved in `pairs_dir` and build the preference dataset with the filters of `args`.

    Re-filtering needs no model: for instance `read_west_of_n_pairs("pairs", WestOfNConfig(confidence_quantile=0.5))`.

    Args:
        pairs_dir (`str` or `Path`):
            An offline generator's `pairs_dir`.
        args ([`WestOfNConfig`], *optional*):
            Filters and `keep_candidates`; no filter when omitted.
    """
    if args is not None and not isinstance(args, WestOfNConfig):
        raise TypeError(f"`args` must be a `WestOfNConfig` (its filters are used), got {type(args).__name__}.")
    args = args or WestOfNConfig()
    pairs_dir = Path(pairs_dir)
    if not (pairs_dir / SHARDS).is_dir():
        raise FileNotFoundError(
            f"{pairs_dir} holds no West-of-N results (no {pairs_dir / SHARDS} directory). Give the `pairs_dir` a "
            "`WestOfNGenerator` wrote to."
        )
    results = [r for _, r in sorted(read_results(pairs_dir).items())]
    kept, _ = filter_results(results, args)
    return results_to_dataset(kept, args.keep_candidates)


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None

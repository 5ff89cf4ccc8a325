"""The offline generator's output directory: a manifest, append-only JSONL shards, a summary and the final dataset.

```
pairs_dir/
  manifest.json          what the results depend on; a rerun must match it to resume
  shards/process-0.jsonl one line per prompt ([`PromptResult`]), appended and fsync'ed after each group of prompts
  summary.json           counts: pairs formed, removed by each filter, kept
  dataset/               the final preference dataset (`datasets.load_from_disk`)
```

Every process appends to its own shard. A crash can leave a partial last line, possibly cut inside a multi-byte UTF-8
character (shards are UTF-8 and not ASCII-escaped); the owner cuts it off before it appends again, and readers skip
lines that do not decode or parse. Results are read back from all shards, whatever number of processes wrote them.

The second half turns saved results into the filtered TRL preference dataset ([`filter_results`],
[`results_to_dataset`], [`read_west_of_n_pairs`]). It has TRL's preference columns `prompt`, `chosen`, `rejected`
(chosen/rejected in the prompt's format) and, for analysis, `chosen_score`, `rejected_score`, `confidence`,
`chosen_logp`, `rejected_logp`; with `keep_candidates`, also `completions` and `rewards` (every response and its
base-model score: RRHF's format).
"""

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from datasets import Dataset

from ..data_utils import as_completion
from ..errors import TrlWonError
from ..utils import atomic_write_text
from .config import WestOfNConfig
from .preference import confidence_mask, likelihood_mask, quantile_confidence_mask
from .results import PromptResult


logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
SHARDS = "shards"
DATASET = "dataset"
FORMAT_VERSION = 1


class ResumeMismatchError(TrlWonError, ValueError):
    """`pairs_dir` holds results made with different arguments."""


class DamagedPairsDirError(ValueError):
    """A file of `pairs_dir` cannot be read. The message names the file and what to do."""


def read_manifest(path: Path) -> dict:
    """The saved manifest, or an error naming the file and what to do if it is damaged."""
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problem = f"is not valid JSON ({error})"
    else:
        if isinstance(manifest, dict):
            return manifest
        problem = f"holds a {type(manifest).__name__}, not the JSON object of a manifest"
    raise DamagedPairsDirError(
        f"{path} {problem}: the file was damaged (for instance a copy or a disk-full write was cut short), so it is "
        f"unknown how the results in {path.parent} were made and they cannot be resumed. Move the directory aside "
        f"(`mv {path.parent} {path.parent}.damaged`) and rerun to start over, or give a new `pairs_dir`."
    )


def check_or_write_manifest(pairs_dir: Path, manifest: dict, write: bool) -> bool:
    """Compare `manifest` with the one in `pairs_dir` (raise on any difference); write it when absent and `write`.

    Returns:
        `bool`: Whether a manifest was already there (the run resumes).
    """
    path = pairs_dir / MANIFEST
    if path.exists():
        existing = read_manifest(path)
        differences = [
            f"{key}: saved {existing.get(key)!r}, now {manifest.get(key)!r}"
            for key in sorted(set(existing) | set(manifest))
            if existing.get(key) != manifest.get(key)
        ]
        if differences:
            raise ResumeMismatchError(
                f"{pairs_dir} holds West-of-N results made with different arguments, so this run cannot resume "
                f"there ({'; '.join(differences)}). Use a new `pairs_dir`, or delete {pairs_dir} to start over. "
                "(Filters and batch sizes for scoring may change between runs; they are not part of the manifest.)"
            )
        return True
    shards = pairs_dir / SHARDS
    if shards.exists() and any(shards.iterdir()):
        raise ResumeMismatchError(
            f"{pairs_dir} has shards but no {MANIFEST}, so it is unknown how they were made. Use a new `pairs_dir`, "
            f"or delete {pairs_dir} to start over."
        )
    if write:
        pairs_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True))
    return False


def shard_path(pairs_dir: Path, process_index: int) -> Path:
    return pairs_dir / SHARDS / f"process-{process_index}.jsonl"


def repair_shard(path: Path) -> None:
    """Cut off a partial last line (left by a crash mid-write) so that appending starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        logger.warning("Dropping a partial line at the end of %s (interrupted write).", path)
        with open(path, "r+b") as f:
            f.truncate(cut)


def append_results(path: Path, results: Iterable[PromptResult]) -> None:
    """Append one JSON line per result and make it durable before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in results)
    with open(path, "a", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def read_results(pairs_dir: Path) -> dict[int, PromptResult]:
    """All results saved in `pairs_dir`'s shards, by prompt index (lines that do not parse are skipped)."""
    results: dict[int, PromptResult] = {}
    shards = pairs_dir / SHARDS
    if not shards.exists():
        return results
    for path in sorted(shards.glob("*.jsonl")):
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            try:  # bytes, decoded line by line: a line cut inside a multi-byte character must not stop the reading
                data = json.loads(line.decode("utf-8"))
                result = PromptResult.from_dict(data)
            except (UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError):
                if number < len(lines):  # not the (partial) last line of an interrupted write
                    logger.warning(
                        "Skipping line %d of %s, which is not a saved result; its group of prompts will be redone.",
                        number,
                        path,
                    )
                continue
            results[result.index] = result
    return results


def done_chunks(results: dict[int, PromptResult], num_prompts: int, prompts_per_chunk: int) -> set[int]:
    """The groups of prompts whose every prompt has a saved result."""
    num_chunks = -(-num_prompts // prompts_per_chunk)
    done = set()
    for chunk in range(num_chunks):
        indices = range(chunk * prompts_per_chunk, min((chunk + 1) * prompts_per_chunk, num_prompts))
        if all(i in results and results[i].chunk == chunk for i in indices):
            done.add(chunk)
    return done


def write_summary(pairs_dir: Path, summary: dict) -> None:
    (pairs_dir / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True))


# From saved results to the preference dataset

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

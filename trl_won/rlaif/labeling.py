"""Datasets labeled by a judge: [`label_preferences`] turns pairs of completions into a TRL preference dataset with
soft labels, [`labeler_alignment`] measures a judge on a gold preference dataset. Both check every row first, then
judge through the label store ([`judge_pairs_cached`])."""

import logging
import random
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from datasets import Dataset, IterableDataset
from trl.data_utils import maybe_extract_prompt

from ..data_utils import Completion, DatasetFormatError, Prompt, check_messages, require_columns, row_error
from .alignment import LabelerAlignment, alignment_metrics
from .base import PairwiseJudge
from .cached import judge_pairs_cached
from .judgement import PairwiseJudgement, ScoreJudgement
from .openai_client import JudgeError
from .store import LabelStore, pair_key


if TYPE_CHECKING:
    from .batch import BatchSettings


logger = logging.getLogger(__name__)


def label_preferences(
    dataset,
    judge: PairwiseJudge,
    *,
    store: LabelStore | None = None,
    pairing: str = "all",
    min_confidence: float | None = None,
    drop_inconsistent: bool = False,
    chunk_size: int = 64,
    seed: int = 0,
    show_progress: bool = True,
    batch: "BatchSettings | bool | None" = None,
) -> "Dataset":
    """Turn pairs of completions into a TRL preference dataset labeled by `judge`.

    Input rows are `(prompt, completion_a, completion_b)` or `(prompt, completions)`; with a list of completions,
    `pairing="all"` judges every pair of the row and `pairing="random"` one random pair. The output has TRL's
    `prompt`, `chosen`, `rejected` columns (in the prompt's format, standard or conversational), plus:

    - `soft_label`: the judge's probability that `chosen` is preferred (>= 0.5), for [`RLAIFRewardTrainer`];
    - `soft_label_chosen_first`, `soft_label_chosen_second`: that probability with `chosen` shown first / second;
    - `position_consistent`: whether the judge preferred `chosen` in both orders;
    - `rationale_chosen_first`, `rationale_chosen_second`: the judge's rationales, with chain of thought;
    - the input's other columns (except `completions` and `rewards`).

    Pairs the judge could not label are dropped, and so, on request, are low-confidence and position-inconsistent
    pairs; what was dropped and why is logged.

    Args:
        dataset ([`~datasets.Dataset`], [`~datasets.IterableDataset`] or `list[dict]`):
            The rows to label. Errors about a row name its index in `dataset`.
        judge ([`PairwiseJudge`]):
            The judge.
        store ([`LabelStore`], *optional*):
            Label store; a rerun after a crash asks the judge only for pairs not stored yet.
        pairing (`str`, *optional*, defaults to `"all"`):
            `"all"` or `"random"`, for rows with a `completions` list.
        min_confidence (`float`, *optional*):
            Drop pairs whose `soft_label` is below this (in [0.5, 1]).
        drop_inconsistent (`bool`, *optional*, defaults to `False`):
            Drop pairs whose preference flips when the order is swapped.
        chunk_size (`int`, *optional*, defaults to `64`):
            Pairs per judge call and per store transaction.
        seed (`int`, *optional*, defaults to `0`):
            Seed of `pairing="random"`.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar.
        batch ([`BatchSettings`] or `bool`, *optional*):
            Label through batch files instead of live requests (a served judge, with `store`): OpenAI's Batch API at
            the judge's `base_url` (`True` for the default [`BatchSettings`]), or with
            `BatchSettings(results_file=...)` the output of vLLM's `run-batch` for a file written by
            [`write_batch_requests`]. A rerun after a crash resumes the batches already submitted.

    Returns:
        [`~datasets.Dataset`]: The preference dataset.
    """

    if min_confidence is not None and not 0.5 <= min_confidence <= 1:
        raise ValueError(f"`min_confidence` must be in [0.5, 1], got {min_confidence}.")
    examples, columns = _labeling_rows(dataset)
    consumed = ("prompt", "completion_a", "completion_b", "completions", "rewards")
    rows, prompts, a, b = _pairs_of_rows(examples, columns, pairing, seed)
    judgements = judge_pairs_cached(judge, prompts, a, b, store, chunk_size, show_progress, batch=batch)
    require_some_judged(judgements, "pairs")
    extra = {name: [examples[row].get(name) for row in rows] for name in columns if name not in consumed}
    output, dropped = preference_columns(
        prompts, a, b, judgements, min_confidence=min_confidence, drop_inconsistent=drop_inconsistent, extra=extra
    )
    if dropped:
        details = ", ".join(f"{n} {why}" for why, n in dropped.most_common())
        logger.warning("label_preferences kept %d of %d pairs; dropped %s.", len(output["prompt"]), len(a), details)
    return Dataset.from_dict(output)


def check_labeling_dataset(dataset, pairing: str = "all", seed: int = 0) -> int:
    """Check `dataset` as [`label_preferences`] reads it (rows, columns, each row's completions) without asking a
    judge; return the number of pairs it would label. A [`DatasetFormatError`] names the column or row and the fix.
    `trl-won label` calls it before it loads a judge or creates a label store."""
    examples, columns = _labeling_rows(dataset)
    return len(_pairs_of_rows(examples, columns, pairing, seed)[0])


def write_batch_requests(
    dataset, judge: PairwiseJudge, path, *, store: LabelStore, pairing: str = "all", seed: int = 0
) -> int:
    """Write the request file of the pairs of `dataset` that `store` has no label for, for vLLM's offline runner
    (`vllm run-batch -i path -o results.jsonl --model ...`), and record its requests in `store`; return how many
    request lines were written. Then `label_preferences(dataset, judge, store=store,
    batch=BatchSettings(results_file="results.jsonl"))` reads the results back and labels.

    The rows are read as [`label_preferences`] reads them (same `pairing` and `seed`). The judge must be a served
    judge using the chat endpoint (run-batch has no `/v1/completions`) without chain of thought.
    """
    from .batch import BatchLabeler, BatchSettings

    if not isinstance(store, LabelStore):
        raise TypeError("`store` must be a `LabelStore`: it records the requests so that their results can be read.")
    examples, columns = _labeling_rows(dataset)
    _, prompts, a, b = _pairs_of_rows(examples, columns, pairing, seed)
    unique: dict[str, tuple] = {}
    for item in zip(prompts, a, b, strict=True):  # judged once, in the orientation of its first row (as labeling does)
        unique.setdefault(pair_key(*item)[0], item)
    firsts = list(unique.values())
    fingerprint, fields = judge.described_fingerprint()
    store.register_judge(fingerprint, fields)
    stored = store.get_pairs(fingerprint, *zip(*firsts, strict=True)) if firsts else []
    missing = [item for item, label in zip(firsts, stored, strict=True) if label is None]
    return BatchLabeler(judge, store, BatchSettings(show_progress=False), "pairs").write_request_file(missing, path)


def _labeling_rows(dataset) -> tuple[list[dict], list[str]]:
    """The rows of a labeling dataset as dicts, and its columns, checked."""
    if not isinstance(dataset, (Dataset, IterableDataset, list)):
        raise TypeError(
            f"`dataset` must be a `Dataset`, an `IterableDataset` or a list of dicts, got {type(dataset).__name__}."
        )
    # Rows as dicts: a list, a Dataset or an IterableDataset (whose features may be unknown) alike.
    examples = []
    for row, example in enumerate(dataset):
        if not isinstance(example, dict):
            raise row_error(row, None, f"expected a dict of columns, got {example!r:.80}.", "Give rows as dicts.")
        examples.append(dict(example))
    if not examples:
        raise DatasetFormatError("The labeling dataset has no rows. Give at least one row to label.")
    columns = list(dict.fromkeys(key for example in examples for key in example))
    require_columns(columns, ["prompt"], "labeling", "Give every row a 'prompt'.")
    consumed = ("prompt", "completion_a", "completion_b", "completions", "rewards")
    clashing = [name for name in columns if name not in consumed and name in OUTPUT_COLUMNS]
    if clashing:
        raise DatasetFormatError(
            f"The labeling dataset has column(s) {clashing}, which label_preferences writes. Rename or remove them."
        )
    return examples, columns


OUTPUT_COLUMNS = (
    "prompt",
    "chosen",
    "rejected",
    "soft_label",
    "soft_label_chosen_first",
    "soft_label_chosen_second",
    "position_consistent",
    "rationale_chosen_first",
    "rationale_chosen_second",
)


def preference_columns(
    prompts: Sequence[Prompt],
    completions_a: Sequence[Completion],
    completions_b: Sequence[Completion],
    judgements: Sequence[PairwiseJudgement],
    *,
    min_confidence: float | None = None,
    drop_inconsistent: bool = False,
    extra: dict[str, list] | None = None,
) -> tuple[dict[str, list], Counter]:
    """Columns of a preference dataset from judged pairs (see [`label_preferences`]) and the count of dropped pairs
    by reason. `extra` columns (one value per pair) are carried over for the kept pairs."""
    with_rationales = any(j.rationale_a_first or j.rationale_a_second for j in judgements)
    columns = ["prompt", "chosen", "rejected", "soft_label", "soft_label_chosen_first", "soft_label_chosen_second"]
    columns.append("position_consistent")
    if with_rationales:
        columns += ["rationale_chosen_first", "rationale_chosen_second"]
    extra = extra or {}
    output: dict[str, list] = {c: [] for c in [*columns, *extra]}
    dropped: Counter = Counter()
    for i, (prompt, completion_a, completion_b, judgement) in enumerate(
        zip(prompts, completions_a, completions_b, judgements, strict=True)
    ):
        if judgement.probability is None:
            dropped[f"not judged ({judgement.reason})"] += 1
            continue
        a_wins = judgement.probability >= 0.5
        oriented = judgement if a_wins else judgement.swapped()
        if drop_inconsistent and oriented.position_consistent is not True:
            dropped["position-inconsistent"] += 1
            continue
        if min_confidence is not None and oriented.probability < min_confidence:
            dropped[f"confidence below {min_confidence}"] += 1
            continue
        values = {
            "prompt": prompt,
            "chosen": completion_a if a_wins else completion_b,
            "rejected": completion_b if a_wins else completion_a,
            "soft_label": oriented.probability,
            "soft_label_chosen_first": oriented.probability_a_first,
            "soft_label_chosen_second": oriented.probability_a_second,
            "position_consistent": oriented.position_consistent,
            "rationale_chosen_first": oriented.rationale_a_first,
            "rationale_chosen_second": oriented.rationale_a_second,
        }
        for column in columns:
            output[column].append(values[column])
        for column, values_of_column in extra.items():
            output[column].append(values_of_column[i])
    return output, dropped


def labeler_alignment(
    dataset,
    judge: PairwiseJudge,
    *,
    store: LabelStore | None = None,
    chunk_size: int = 64,
    show_progress: bool = True,
) -> LabelerAlignment:
    """Accuracy of `judge` against the gold labels of a preference dataset, and its position bias.

    Args:
        dataset ([`~datasets.Dataset`] or `list[dict]`):
            Rows `(prompt, chosen, rejected)` where `chosen` is the gold (e.g. human) preference; the prompt may be
            implicit (the common start of `chosen` and `rejected`), as in TRL's preference datasets.
        judge ([`PairwiseJudge`]):
            The judge.
        store ([`LabelStore`], *optional*):
            Label store, to reuse and keep the labels.
        chunk_size (`int`, *optional*, defaults to `64`):
            Pairs per judge call.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar.

    Returns:
        [`LabelerAlignment`]
    """

    if isinstance(dataset, list):
        dataset = Dataset.from_list(dataset)
    require_columns(
        dataset.column_names,
        ["chosen", "rejected"],
        "alignment",
        "Give the gold preference as 'chosen' and the other completion as 'rejected'.",
    )
    # Datasets with an implicit prompt (the conversation up to the answers inside 'chosen'/'rejected', as in
    # trl-lib/ultrafeedback_binarized) get it extracted the way TRL's trainers do.
    if "prompt" in dataset.column_names:
        # TRL would replace a conversational prompt by the (empty) common start of string answers: refuse instead.
        for row, example in enumerate(dataset):
            if isinstance(example["prompt"], list):
                _check_labeling_row(example, row, ["chosen", "rejected"])
    dataset = dataset.map(maybe_extract_prompt)
    for row, example in enumerate(dataset):
        _check_labeling_row(example, row, ["chosen", "rejected"])
    judgements = judge_pairs_cached(
        judge, dataset["prompt"], dataset["chosen"], dataset["rejected"], store, chunk_size, show_progress
    )
    require_some_judged(judgements, "pairs of the alignment dataset")
    return alignment_metrics(judgements)


def require_some_judged(judgements: Sequence[PairwiseJudgement | ScoreJudgement], what: str) -> None:
    """Raise [`JudgeError`] when there was something to judge and the judge labeled none of it: a run that could not
    label fails instead of writing an empty dataset."""
    if not judgements:
        return
    values = [j.probability if isinstance(j, PairwiseJudgement) else j.score for j in judgements]
    if all(v is None for v in values):
        reasons = Counter(j.reason for j in judgements).most_common(3)
        details = "; ".join(f"{n}x {reason}" for reason, n in reasons)
        raise JudgeError(f"The judge labeled none of the {len(judgements)} {what}: {details}.")


def _pairs_of_rows(
    examples: list[dict], columns: Sequence[str], pairing: str, seed: int
) -> tuple[list[int], list[Any], list[Any], list[Any]]:
    """Expand the rows into (row index, prompt, a, b) lists, checking each row."""
    rows, prompts, a, b = [], [], [], []
    needed = ["completion_a", "completion_b"] if "completion_a" in columns and "completion_b" in columns else []
    needed = ["prompt", *(needed or (["completions"] if "completions" in columns else []))]
    for i, example in enumerate(examples):
        missing = [column for column in needed if column not in example]
        if missing:
            raise row_error(i, missing[0], "is missing from this row.", "Give every row the same columns.")
    if "completion_a" in columns and "completion_b" in columns:
        for i, example in enumerate(examples):
            _check_labeling_row(example, i, ["completion_a", "completion_b"])
            rows.append(i)
            prompts.append(example["prompt"])
            a.append(example["completion_a"])
            b.append(example["completion_b"])
        return rows, prompts, a, b
    if "completions" not in columns:
        raise row_error(
            None,
            None,
            f"label_preferences needs columns 'prompt' with 'completion_a' and 'completion_b', or 'prompt' with "
            f"'completions' (a list per row); the dataset has {list(columns)}.",
            "Rename your columns to one of these layouts.",
        )
    if pairing not in ("all", "random"):
        raise ValueError(f"`pairing` must be 'all' or 'random', got {pairing!r}.")
    rng = random.Random(seed)
    for i, example in enumerate(examples):
        completions = example["completions"]
        if not isinstance(completions, list) or len(completions) < 2:
            raise row_error(
                i, "completions", f"expected a list of at least 2 completions, got {completions!r:.80}.", "Drop it."
            )
        _check_labeling_row(
            {"prompt": example["prompt"], **{f"completions[{x}]": c for x, c in enumerate(completions)}},
            i,
            [f"completions[{x}]" for x in range(len(completions))],
        )
        if pairing == "all":
            indices = [(x, y) for x in range(len(completions)) for y in range(x + 1, len(completions))]
        else:
            indices = [tuple(rng.sample(range(len(completions)), 2))]
        for x, y in indices:
            rows.append(i)
            prompts.append(example["prompt"])
            a.append(completions[x])
            b.append(completions[y])
    return rows, prompts, a, b


def _check_labeling_row(example: dict, row: int, columns: Sequence[str]) -> bool:
    """Check the prompt and completions of one `label_preferences` row; return whether it is conversational."""
    prompt = example.get("prompt")
    conversational = isinstance(prompt, list)
    if conversational:
        check_messages(prompt, row, "prompt")
    elif not isinstance(prompt, str):
        raise row_error(
            row, "prompt", f"expected a string or a list of messages, got {prompt!r:.80}.", "Fix or drop the row."
        )
    for column in columns:
        completion = example[column]
        if conversational:
            if not isinstance(completion, list):
                raise row_error(
                    row,
                    column,
                    f"the prompt is a list of messages, so the completion must be one too, got {completion!r:.80}.",
                    "Use the same format (standard or conversational) for the prompt and its completions.",
                )
            check_messages(completion, row, column)
        elif not isinstance(completion, str):
            raise row_error(
                row,
                column,
                f"the prompt is a string, so the completion must be one too, got {completion!r:.80}.",
                "Use the same format (standard or conversational) for the prompt and its completions.",
            )
    return conversational

"""Labeling with a judge through a label store: preference datasets and labeler alignment."""

import logging
import queue
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, IterableDataset
from tqdm.auto import tqdm
from trl.data_utils import maybe_extract_prompt

from ..data_utils import Completion, DatasetFormatError, Prompt, check_messages, require_columns, row_error
from .base import PairwiseJudge, ScoringJudge, check_inputs
from .judgement import PairwiseJudgement, ScoreJudgement
from .openai_client import JudgeError
from .store import LabelStore, content_key, pair_key


logger = logging.getLogger(__name__)


def _check_judge_and_store(judge: Any, kind: type, store: Any) -> None:
    if not isinstance(judge, kind):
        raise TypeError(
            f"`judge` must be a `{kind.__name__}` (from `trl_won.rlaif`), got {type(judge).__name__}. Subclass it, "
            "implementing its `_judge_pairs`/`_score_completions` and `fingerprint_fields`."
        )
    if store is not None and not isinstance(store, LabelStore):
        raise TypeError(f"`store` must be a `LabelStore` (`LabelStore(path)`), got {type(store).__name__}.")


class _LabelWriter:
    """Stores labels as they arrive, from a thread of its own: each transaction writes everything that arrived
    while the previous one was being written (group commit), so a label is on disk a few milliseconds after the judge
    gave it, without one disk flush per label and without holding up the judge."""

    def __init__(self, put: Callable[[list[int], list], Any]):
        self.put = put
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="label-writer", daemon=True)
        self.thread.start()

    def add(self, indices: list[int], judgements: list) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((indices, judgements))

    def _run(self) -> None:
        done = False
        while not done:
            batch = [self.queue.get()]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is None
            items = [item for item in batch if item is not None]
            if items and self.error is None:
                try:
                    self.put([i for idx, _ in items for i in idx], [j for _, js in items for j in js])
                except BaseException as error:  # reported by `close` (and the next `add`)
                    self.error = error

    def close(self) -> None:
        """Write what is left and stop; raise if a write failed."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _cached(judge, stream, key_of, store, kind: str, items: list[tuple], chunk_size, show_progress, desc, unit):
    """Shared by [`judge_pairs_cached`] and [`score_cached`]: look up, judge what is missing, store as it arrives."""
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
    keys = [key_of(*item) for item in items]
    first_of: dict[str, int] = {}
    for i, key in enumerate(keys):
        first_of.setdefault(key if isinstance(key, str) else key[0], i)
    firsts = list(first_of.values())
    found: dict[int, Any] = {}
    fingerprint = None
    if store is not None and firsts:
        fingerprint, fields = judge.described_fingerprint()
        store.register_judge(fingerprint, fields)
        stored = getattr(store, f"get_{kind}")(fingerprint, *zip(*[items[i] for i in firsts], strict=True))
        found = {i: j for i, j in zip(firsts, stored, strict=True) if j is not None}
    missing = [i for i in firsts if i not in found]
    progress = tqdm(total=len(firsts), initial=len(found), desc=desc, unit=unit, disable=not show_progress)
    writer = None
    if store is not None and missing:
        put = getattr(store, f"put_{kind}")
        writer = _LabelWriter(lambda where, js: put(fingerprint, *zip(*[items[missing[p]] for p in where]), js))
    lock = threading.Lock()

    def on_judged(positions: list[int], judgements: list) -> None:
        with lock:
            for position, judgement in zip(positions, judgements, strict=True):
                found[missing[position]] = judgement
            progress.update(len(positions))
        if writer is not None:
            writer.add(positions, judgements)

    try:
        if missing:
            columns = [list(column) for column in zip(*[items[i] for i in missing], strict=True)]
            stream(*columns, on_judged, chunk_size)
    finally:
        progress.close()
        if writer is not None:
            writer.close()  # whatever was judged is stored, also when the run stops with an error
    return keys, first_of, found


def judge_pairs_cached(
    judge: PairwiseJudge,
    prompts: Sequence[Prompt],
    completions_a: Sequence[Completion],
    completions_b: Sequence[Completion],
    store: LabelStore | None = None,
    chunk_size: int = 64,
    show_progress: bool = False,
) -> list[PairwiseJudgement]:
    """Judge pairs, asking the judge only for pairs the store does not hold and storing each label as it arrives.

    Duplicate pairs (also in swapped order) are judged once. A local judge gets `chunk_size` pairs per call; a served
    judge keeps its requests flowing over all pairs (a slow or retried request never holds up the others). Each
    label is stored within milliseconds of its answer, so interrupting this function (crash, Ctrl-C) loses almost
    nothing: calling it again asks only for the pairs not stored yet.

    Args:
        judge ([`PairwiseJudge`]): The judge.
        prompts, completions_a, completions_b (`Sequence`): The pairs.
        store ([`LabelStore`], *optional*): Where labels are read from and written to; without it nothing is cached.
        chunk_size (`int`, *optional*, defaults to `64`): Pairs per call of a local judge.
        show_progress (`bool`, *optional*, defaults to `False`): Show a progress bar over unique pairs.

    Returns:
        `list[PairwiseJudgement]`: One judgement per pair, in order, oriented as given.
    """
    _check_judge_and_store(judge, PairwiseJudge, store)
    count = check_inputs({"prompts": prompts, "completions_a": completions_a, "completions_b": completions_b})
    items = list(zip(prompts, completions_a, completions_b, strict=True))
    keys, first_of, found = _cached(
        judge,
        judge._judge_pairs_streaming,
        pair_key,
        store,
        "pairs",
        items,
        chunk_size,
        show_progress,
        "Judging pairs",
        "pair",
    )
    results = []
    for i in range(count):
        key, flipped = keys[i]
        first = first_of[key]
        judgement = found[first]
        results.append(judgement.swapped() if flipped != keys[first][1] else judgement)
    return results


def score_cached(
    judge: ScoringJudge,
    prompts: Sequence[Prompt],
    completions: Sequence[Completion],
    store: LabelStore | None = None,
    chunk_size: int = 64,
    show_progress: bool = False,
) -> list[ScoreJudgement]:
    """Score completions, asking the judge only for what the store does not hold (see [`judge_pairs_cached`])."""
    _check_judge_and_store(judge, ScoringJudge, store)
    count = check_inputs({"prompts": prompts, "completions": completions})
    items = list(zip(prompts, completions, strict=True))
    keys, first_of, found = _cached(
        judge,
        judge._score_streaming,
        content_key,
        store,
        "scores",
        items,
        chunk_size,
        show_progress,
        "Scoring",
        "item",
    )
    return [found[first_of[keys[i]]] for i in range(count)]


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

    Returns:
        [`~datasets.Dataset`]: The preference dataset.
    """

    if min_confidence is not None and not 0.5 <= min_confidence <= 1:
        raise ValueError(f"`min_confidence` must be in [0.5, 1], got {min_confidence}.")
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
    rows, prompts, a, b = _pairs_of_rows(examples, columns, pairing, seed)
    judgements = judge_pairs_cached(judge, prompts, a, b, store, chunk_size, show_progress)
    require_some_judged(judgements, "pairs")
    extra = {name: [examples[row].get(name) for row in rows] for name in columns if name not in consumed}
    output, dropped = preference_columns(
        prompts, a, b, judgements, min_confidence=min_confidence, drop_inconsistent=drop_inconsistent, extra=extra
    )
    if dropped:
        details = ", ".join(f"{n} {why}" for why, n in dropped.most_common())
        logger.warning("label_preferences kept %d of %d pairs; dropped %s.", len(output["prompt"]), len(a), details)
    return Dataset.from_dict(output)


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


@dataclass(frozen=True)
class LabelerAlignment:
    """How well a judge agrees with gold (human) labels.

    Args:
        accuracy (`float` or `None`): Fraction of judged pairs where the judge's argmax is the gold choice (a tie
            counts 1/2).
        position_consistency (`float` or `None`): Fraction of pairs where the judge preferred the same completion in
            both orders.
        same_position_rate (`float` or `None`): Fraction where it preferred the same *position* after swapping (the
            paper's position-bias measure; `1 - position_consistency`).
        mean_confidence (`float` or `None`): Mean of `max(p, 1 - p)`.
        num_pairs (`int`): Pairs given.
        num_judged (`int`): Pairs the judge labeled.
    """

    accuracy: float | None
    position_consistency: float | None
    same_position_rate: float | None
    mean_confidence: float | None
    num_pairs: int
    num_judged: int

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


def alignment_metrics(judgements: Sequence[PairwiseJudgement], gold: Sequence[str] | None = None) -> LabelerAlignment:
    """Labeler alignment from judgements of pairs with known gold preferences.

    Args:
        judgements (`Sequence[PairwiseJudgement]`): The judge's judgements of pairs `(a, b)`.
        gold (`Sequence[str]`, *optional*): `"a"` or `"b"` per pair, the gold preference; defaults to `"a"` for every
            pair (pairs given as `(chosen, rejected)`).
    """
    gold = list(gold) if gold is not None else ["a"] * len(judgements)
    if len(gold) != len(judgements):
        raise ValueError(f"`gold` has {len(gold)} entries for {len(judgements)} judgements.")
    if any(g not in ("a", "b") for g in gold):
        raise ValueError("Each gold label must be 'a' or 'b'.")
    judged = [(j, g) for j, g in zip(judgements, gold, strict=True) if j.probability is not None]
    hits = [1.0 if j.preferred == g else 0.5 if j.preferred is None else 0.0 for j, g in judged]
    consistency = [j.position_consistent for j, _ in judged if j.position_consistent is not None]

    def mean(values):
        return sum(values) / len(values) if values else None

    position_consistency = mean([1.0 if c else 0.0 for c in consistency])
    return LabelerAlignment(
        accuracy=mean(hits),
        position_consistency=position_consistency,
        same_position_rate=None if position_consistency is None else 1.0 - position_consistency,
        mean_confidence=mean([j.confidence for j, _ in judged]),
        num_pairs=len(judgements),
        num_judged=len(judged),
    )


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

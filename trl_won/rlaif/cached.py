"""Judge calls through a label store: [`judge_pairs_cached`] and [`score_cached`] ask the judge only for what the
store does not hold yet, and store each label as it arrives (from a writer thread of its own), so that a crash or
Ctrl-C loses almost nothing and a rerun resumes where the last one stopped."""

import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ..data_utils import Completion, Prompt
from .base import PairwiseJudge, ScoringJudge, check_inputs
from .judgement import PairwiseJudgement, ScoreJudgement
from .store import LabelStore, content_key, pair_key


if TYPE_CHECKING:
    from .batch import BatchSettings


def judge_pairs_cached(
    judge: PairwiseJudge,
    prompts: Sequence[Prompt],
    completions_a: Sequence[Completion],
    completions_b: Sequence[Completion],
    store: LabelStore | None = None,
    chunk_size: int = 64,
    show_progress: bool = False,
    batch: "BatchSettings | bool | None" = None,
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
        batch ([`BatchSettings`] or `bool`, *optional*): Label a served judge's missing pairs through batch files
            (OpenAI's Batch API, or a vLLM `run-batch` results file) instead of live requests; `True` for the
            default [`BatchSettings`]. Needs `store`.

    Returns:
        `list[PairwiseJudgement]`: One judgement per pair, in order, oriented as given.
    """
    _check_judge_and_store(judge, PairwiseJudge, store)
    count = check_inputs({"prompts": prompts, "completions_a": completions_a, "completions_b": completions_b})
    items = list(zip(prompts, completions_a, completions_b, strict=True))
    keys, first_of, found = _cached(
        judge,
        _batch_stream(judge, store, batch, "pairs") or judge._judge_pairs_streaming,
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
    batch: "BatchSettings | bool | None" = None,
) -> list[ScoreJudgement]:
    """Score completions, asking the judge only for what the store does not hold (see [`judge_pairs_cached`], also
    for `batch`)."""
    _check_judge_and_store(judge, ScoringJudge, store)
    count = check_inputs({"prompts": prompts, "completions": completions})
    items = list(zip(prompts, completions, strict=True))
    keys, first_of, found = _cached(
        judge,
        _batch_stream(judge, store, batch, "scores") or judge._score_streaming,
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


def _batch_stream(judge: Any, store: LabelStore | None, batch: Any, kind: str) -> Callable | None:
    """The batch labeler's stream of judgements for `batch` (`None` without batch mode)."""
    if batch is None or batch is False:
        return None
    from .batch import BatchLabeler, BatchSettings

    if batch is True:
        batch = BatchSettings()
    if not isinstance(batch, BatchSettings):
        raise TypeError(f"`batch` must be a `BatchSettings` or a bool, got {type(batch).__name__}.")
    return BatchLabeler(judge, store, batch, kind).stream


def _check_judge_and_store(judge: Any, kind: type, store: Any) -> None:
    if not isinstance(judge, kind):
        raise TypeError(
            f"`judge` must be a `{kind.__name__}` (from `trl_won.rlaif`), got {type(judge).__name__}. Subclass it, "
            "implementing its `_judge_pairs`/`_score_completions` and `fingerprint_fields`."
        )
    if store is not None and not isinstance(store, LabelStore):
        raise TypeError(f"`store` must be a `LabelStore` (`LabelStore(path)`), got {type(store).__name__}.")


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

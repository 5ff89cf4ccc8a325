"""`trl-won label`: label preference pairs with an AI judge (RLAIF), local or OpenAI-compatible.

The script behind `examples/rlaif_label.py`. Labels go to `{output_dir}/labels.sqlite` as they arrive, so a rerun after
a crash or Ctrl-C asks the judge only for pairs not labeled yet; the labeled dataset goes to
`{output_dir}/preferences.jsonl`. A run that labels nothing (a judge that never answered, every pair filtered out)
exits 1. The arguments and the dataset are checked before anything is written, and a run that fails before its first
label is stored removes the store it created (a store that existed before, or holds labels, is never removed).
"""

import argparse
import contextlib
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field

from trl import DatasetMixtureConfig, TrlParser

from ..dataset_loading import load_dataset_dict, select_split
from ..errors import UsageError
from .common import (
    JUDGE_MODEL,
    JUDGE_NAME_FOR_URL,
    NO_DATASET,
    JudgeArguments,
    check_produced,
    check_required,
    dataset_source,
    has_dataset,
    hide_unsupported_mixture_flags,
    load_script_dataset,
    make_judge,
    reject_unsupported_mixture_flags,
    required,
)


EXAMPLES = """examples:
  # a local judge (pairs.jsonl: prompt + completion_a/completion_b, or prompt + completions)
  trl-won label --judge_model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --judge_use_chat_template \\
      --dataset_name pairs.jsonl --output_dir labels-local

  # a bigger judge in 4-bit on one GPU, with its agreement with human labels
  trl-won label --judge_model_name_or_path Qwen/Qwen2.5-7B-Instruct --judge_use_chat_template \\
      --judge_load_in_4bit --judge_dtype bfloat16 --dataset_name pairs.jsonl --judge_template helpfulness \\
      --alignment_dataset trl-lib/ultrafeedback_binarized --alignment_split test --alignment_samples 500 \\
      --output_dir labels-7b

  # a judge served by vLLM (or TGI, llama.cpp, OpenAI with OPENAI_API_KEY set): start the server first with
  #   vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000
  trl-won label --judge_model_name_or_path Qwen/Qwen2.5-7B-Instruct --judge_base_url http://localhost:8000/v1 \\
      --dataset_name pairs.jsonl --judge_max_concurrency 64 --output_dir labels-served

  # labels through batch files (see docs/rlaif.md): OpenAI's Batch API (half price, within 24 h) with
  #   --judge_batch_api; vLLM's offline runner with --judge_batch_file requests.jsonl (writes it and exits), then
  #   vllm run-batch -i requests.jsonl -o results.jsonl --model Qwen/Qwen2.5-7B-Instruct
  # and the same command with --judge_batch_results results.jsonl instead of --judge_batch_file.
"""


@dataclass
class LabelArguments:
    """Arguments of `trl-won label` besides the judge's (`JudgeArguments`, the `--judge_*` flags) and TRL's
    `datasets:` mixture.

    Args:
        dataset_name (`str`, *optional*):
            Pairs to label: a hub id, a `.json`/`.jsonl`/`.parquet`/`.csv` file or a saved dataset. Required unless
            a `datasets` mixture is given.
        dataset_config (`str`, *optional*):
            Dataset configuration name (hub datasets).
        dataset_train_split (`str`, *optional*, defaults to `"train"`):
            Split to label.
        max_samples (`int`, *optional*):
            Label only the first rows.
        min_confidence (`float`, *optional*):
            Drop pairs whose soft label is below this (in [0.5, 1]).
        drop_inconsistent (`bool`, *optional*, defaults to `False`):
            Drop pairs whose preference flips when the order is swapped.
        alignment_dataset (`str`, *optional*):
            A `prompt`/`chosen`/`rejected` dataset with human labels to measure the judge's alignment on.
        alignment_split (`str`, *optional*, defaults to `"test"`):
            Its split.
        alignment_samples (`int`, *optional*, defaults to `200`):
            Rows of it to use.
        output_dir (`str`, *optional*, defaults to `"rlaif-labels"`):
            Where the label store and the labeled dataset go.
        judge_batch_api (`bool`, *optional*, defaults to `False`):
            Served judge: label through the server's Batch API (OpenAI's: half price, results within 24 hours)
            instead of live requests. A rerun after a crash resumes the batches already submitted.
        judge_batch_file (`str`, *optional*):
            Write the request file for vLLM's `run-batch` (the pairs not labeled yet) and exit.
        judge_batch_results (`str`, *optional*):
            Read `run-batch`'s output file into the label store and finish labeling (no server).
        judge_batch_failed (`str`, *optional*, defaults to `"report"`):
            Request lines that got no answer: `"report"` (not labeled, sent again by a rerun), `"resubmit"` (in a new
            batch) or `"live"` (asked live).
        judge_batch_poll_interval (`float`, *optional*, defaults to `30.0`):
            Seconds between looks at the running batches (growing up to 10 minutes while none finishes).
        judge_batch_max_requests (`int`, *optional*, defaults to `50000`):
            Most requests per batch file (OpenAI's limit; files are also kept under 200 MB).
    """

    dataset_name: str | None = field(default=None, metadata={"help": "Pairs to label (hub id, file or folder)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name (hub)."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to label."})
    max_samples: int | None = field(default=None, metadata={"help": "Label only the first rows."})
    min_confidence: float | None = field(default=None, metadata={"help": "Drop pairs with lower soft labels."})
    drop_inconsistent: bool = field(default=False, metadata={"help": "Drop position-inconsistent pairs."})
    alignment_dataset: str | None = field(default=None, metadata={"help": "Human-labeled prompt/chosen/rejected."})
    alignment_split: str = field(default="test", metadata={"help": "Split of the alignment dataset."})
    alignment_samples: int = field(default=200, metadata={"help": "Rows of the alignment dataset."})
    output_dir: str = field(default="rlaif-labels", metadata={"help": "Where the store and dataset go."})
    judge_batch_api: bool = field(
        default=False, metadata={"help": "Served judge: label through the server's Batch API (resumable)."}
    )
    judge_batch_file: str | None = field(
        default=None, metadata={"help": "Write the request file for `vllm run-batch` and exit."}
    )
    judge_batch_results: str | None = field(
        default=None, metadata={"help": "Read `vllm run-batch`'s output file and finish labeling."}
    )
    judge_batch_failed: str = field(
        default="report",
        metadata={"help": "Failed batch lines: report, resubmit or live.", "choices": ["report", "resubmit", "live"]},
    )
    judge_batch_poll_interval: float = field(default=30.0, metadata={"help": "Seconds between batch status polls."})
    judge_batch_max_requests: int = field(default=50_000, metadata={"help": "Most requests per batch file."})

    def __post_init__(self):
        if self.min_confidence is not None and not 0.5 <= self.min_confidence <= 1:
            raise ValueError(f"--min_confidence must be in [0.5, 1], got {self.min_confidence}.")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"--max_samples must be >= 1, got {self.max_samples}.")
        modes = [self.judge_batch_api, self.judge_batch_file is not None, self.judge_batch_results is not None]
        if sum(modes) > 1:
            raise ValueError("Give one of --judge_batch_api, --judge_batch_file and --judge_batch_results.")


def main(args: LabelArguments, judge_args: JudgeArguments, dataset_args: DatasetMixtureConfig | None = None) -> dict:
    """Label the dataset, write `preferences.jsonl` and the label store to `output_dir`, return a summary."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    reject_unsupported_mixture_flags(dataset_args, "trl-won label")
    check_required(
        (
            judge_args.judge_model_name_or_path is not None,
            JUDGE_NAME_FOR_URL if judge_args.judge_base_url else required("--judge_model_name_or_path", JUDGE_MODEL),
        ),
        (has_dataset(args.dataset_name, dataset_args), NO_DATASET),
    )
    from ..rlaif.labeling import check_labeling_dataset  # the judges' package: imported once the arguments are checked
    from ..rlaif.openai_client import OPENAI_API

    dataset = load_script_dataset(args.dataset_name, args.dataset_config, dataset_args)
    pairs = select_split(dataset, args.dataset_train_split, dataset_source(args.dataset_name, dataset_args))
    if args.max_samples is not None:
        pairs = pairs.select(range(min(args.max_samples, len(pairs))))
    check_labeling_dataset(pairs)  # a missing column fails here, before a judge is loaded or a store created
    gold = None
    if args.alignment_dataset is not None:
        gold = select_split(
            load_dataset_dict(args.alignment_dataset), args.alignment_split, "--alignment_dataset", "--alignment_split"
        )
        gold = gold.select(range(min(args.alignment_samples, len(gold))))
    offline = args.judge_batch_file is not None or args.judge_batch_results is not None
    if offline and judge_args.judge_base_url is None:
        # vLLM's run-batch needs no server: the served judge only builds requests and reads answers.
        judge_args = dataclasses.replace(judge_args, judge_base_url=OFFLINE_URL)
    if args.judge_batch_api and judge_args.judge_base_url is None:  # the Batch API is a served judge's: OpenAI's
        judge_args = dataclasses.replace(judge_args, judge_base_url=os.environ.get("OPENAI_BASE_URL") or OPENAI_API)
    try:
        judge = make_judge(judge_args)
    except ValueError as error:  # a setting the judge refuses (e.g. OpenAI's API without a key)
        raise UsageError(str(error)) from None
    batch = _batch_settings(args, judge, offline)
    with _label_store(args.output_dir) as store:
        return _label(args, pairs, judge, store, batch, gold)


def _label(args: LabelArguments, pairs, judge, store, batch, gold) -> dict:
    from ..rlaif import label_preferences, labeler_alignment, write_batch_requests

    if args.judge_batch_file is not None:
        written = write_batch_requests(pairs, judge, args.judge_batch_file, store=store)
        summary = {"request_lines": written, "request_file": args.judge_batch_file, "store": str(store.path)}
        print(json.dumps(summary, indent=2))
        print(
            f"Run: vllm run-batch -i {args.judge_batch_file} -o results.jsonl --model {judge.model} "
            f"--max-logprobs {judge.top_logprobs}\nthen this command again with --judge_batch_results results.jsonl "
            "instead of --judge_batch_file."
        )
        return summary

    labeled = label_preferences(
        pairs,
        judge,
        store=store,
        min_confidence=args.min_confidence,
        drop_inconsistent=args.drop_inconsistent,
        batch=batch,
    )
    path = os.path.join(args.output_dir, "preferences.jsonl")
    labeled.to_json(path)
    summary = {
        "pairs": len(labeled),
        "mean_soft_label": sum(labeled["soft_label"]) / max(1, len(labeled)),
        "position_consistency": sum(bool(c) for c in labeled["position_consistent"]) / max(1, len(labeled)),
        "stored_labels": store.count(judge.fingerprint),
        "label_tokens": store.usage(judge.fingerprint),
    }
    if hasattr(judge, "stats"):
        summary["requests"] = judge.stats.as_dict()
    if batch is not None:
        jobs = store.batch_jobs(judge.fingerprint)
        summary["batch"] = {
            "batches": sum(job["kind"] == "openai" for job in jobs),
            "request_files": sum(job["kind"] == "file" for job in jobs),
            "tokens": store.batch_usage(judge.fingerprint),
        }
    check_produced(
        len(labeled),
        "labeled pairs",
        f"{len(pairs)} rows went to the judge; it answered none of them, or --min_confidence/--drop_inconsistent "
        "dropped every pair (the warnings above say which).",
    )
    if gold is not None:
        summary["alignment"] = labeler_alignment(gold, judge, store=store).as_dict()
    print(json.dumps(summary, indent=2))
    print(f"Labeled preference dataset written to {path}")
    return summary


@contextlib.contextmanager
def _label_store(output_dir: str):
    """The [`LabelStore`] `{output_dir}/labels.sqlite`. If the run fails and the store is one this run created and
    still holds nothing (no label, no batch request), the store and the folders created for it are removed: a failed
    run leaves nothing behind. A store that existed before the run, or holds anything, is never touched."""
    from ..rlaif import LabelStore

    path = os.path.join(output_dir, "labels.sqlite")
    created_folders = []
    folder = os.path.abspath(output_dir)
    while not os.path.exists(folder):
        created_folders.append(folder)
        folder = os.path.dirname(folder)
    created_store = not os.path.exists(path)
    store = LabelStore(path)
    try:
        yield store
    except BaseException:
        # Under a launcher another process may hold the same new store open: then nothing is removed.
        if created_store and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            _remove_if_empty(store, created_folders)
        raise


def _remove_if_empty(store, created_folders: list[str]) -> None:
    try:
        empty = store.is_empty()
    except Exception:  # a store that cannot be read is kept: never delete what might hold labels
        return
    if not empty:
        return
    store.close()
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(f"{store.path}{suffix}"):
            os.remove(f"{store.path}{suffix}")
    for folder in created_folders:  # deepest first; stops at a folder that holds something else
        try:
            os.rmdir(folder)
        except OSError:
            return


# The address given to a served judge whose requests go to files only (never contacted).
OFFLINE_URL = "http://localhost:8000/v1"


def _batch_settings(args: LabelArguments, judge, offline: bool):
    """The [`BatchSettings`] the batch flags ask for (`None` for live labeling), after checking the judge."""
    from ..rlaif.batch import BatchSettings, check_batch_judge

    if not (args.judge_batch_api or offline):
        return None
    if not hasattr(judge, "answer_request"):
        raise UsageError(
            "The --judge_batch_* flags need a served judge (--judge_model_name_or_path as the server names it)."
        )
    if args.alignment_dataset is not None:
        raise UsageError("--alignment_dataset is measured live; run it without the --judge_batch_* flags.")
    try:
        check_batch_judge(judge, offline)
        return BatchSettings(
            results_file=args.judge_batch_results,
            failed=args.judge_batch_failed,
            poll_interval=args.judge_batch_poll_interval,
            max_poll_interval=max(600.0, args.judge_batch_poll_interval),
            max_requests_per_file=args.judge_batch_max_requests,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def make_parser(prog: str | None = None) -> TrlParser:
    parser = TrlParser(
        (LabelArguments, JudgeArguments, DatasetMixtureConfig),
        prog=prog,
        description="Label preference pairs with an LLM judge (RLAIF) and write a TRL preference dataset with soft "
        "labels. Rows are (prompt, completion_a, completion_b) or (prompt, completions).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hide_unsupported_mixture_flags(parser)
    return parser

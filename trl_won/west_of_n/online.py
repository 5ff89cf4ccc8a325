"""Online West-of-N: a data collator that turns prompt-only rows into preference pairs during reward training, and
the thin `RewardTrainer` subclass that lets prompt-only rows reach it.

[`WestOfNDataCollator`] runs the West-of-N step on the prompt-only rows of each batch and filters the pairs (with a
running confidence quantile rather than the offline one over all pairs).

TRL's `RewardTrainer` stands in the way of online West-of-N in three places, each fixed by [`WestOfNRewardTrainer`]
with the least change:

1. `_prepare_dataset` tokenizes every row's `chosen`/`rejected`, which prompt-only rows do not have. Here such rows
   (a `chosen` or `rejected` of `None`, or no such columns at all) get an empty placeholder answer and the flag column
   `west_of_n_prompt_only`, then go through TRL's own preprocessing unchanged, so labeled rows are tokenized exactly as
   before.
2. `_set_signature_columns_if_needed` drops every column but `chosen_ids`, `rejected_ids` and `margin`; the collator
   also needs `prompt` and the flag.
3. When the filters remove every pair of a batch that has no labeled row, there is nothing to compare. The collator
   then returns a placeholder batch marked `west_of_n_skip`, and `compute_loss` returns a zero loss that still runs
   the model (so distributed and gradient-accumulation steps stay in step). Such a step adds no gradient; the
   optimizer still steps (momentum carries on, as for any zero-gradient step). `west_of_n/skipped_batch_rate` counts
   them.

The trainer also attaches the collator to itself (student tokenizer, `max_length`, device, metrics) and checks
`dataloader_num_workers == 0`, since generation must run in the main process.
"""

import time
from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from trl import RewardTrainer
from trl.data_utils import get_dataset_column_names
from trl.trainer.reward_trainer import DataCollatorForPreference

from ..data_utils import as_completion, require_per_process_batches, row_error, tokenize_for_reward_model
from ..models import is_quantized, restore_adapter_dtypes
from ..utils import derived_seed
from .config import WestOfNConfig
from .pipeline import build_pipeline
from .preference import RunningQuantile, confidence_mask, likelihood_mask
from .results import PromptResult


PROMPT_ONLY = "west_of_n_prompt_only"  # dataset column set by WestOfNRewardTrainer: the row has no chosen/rejected
SKIP = "west_of_n_skip"  # batch key: every prompt-only row was filtered out and the batch holds no pair


class WestOfNDataCollator:
    r"""
    Data collator for TRL's `RewardTrainer` that labels prompt-only rows with West-of-N on the fly.

    A batch may mix labeled rows (`prompt`, `chosen`, `rejected`, already tokenized by the trainer) and prompt-only
    rows. For the prompt-only rows the collator samples `n` responses per prompt from the policy (one batched
    generation call), lets the base preference model pick the best and the worst, filters the pairs (absolute
    confidence threshold or running quantile, likelihood bounds, the trainer's `max_length`), tokenizes them with the
    student's tokenizer exactly as `RewardTrainer` tokenizes its data, and returns the batch `RewardTrainer` trains
    on: `input_ids` and `attention_mask` with all chosen sequences first, then all rejected ones (and `margin` when
    the labeled data has one; generated pairs get margin 0).

    Use it with [`WestOfNRewardTrainer`], which keeps the prompt-only rows through TRL's preprocessing, attaches the
    collator to the trainer (tokenizer, device, logging) and handles a batch whose every pair was filtered out. What
    the collator did is logged with the trainer's metrics under `west_of_n/` (pairs kept per batch, keep rate, mean
    confidence and margin, filter rates, running confidence threshold).

    Generation needs the policy in the main process: set `dataloader_num_workers=0` (the trainer checks).

    Args:
        policy (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            The causal LM to sample from, or its path/hub id. It is not trained.
        args ([`WestOfNConfig`], *optional*):
            Sampling, selection and filtering settings (`pairs_dir` and `keep_candidates` are offline-only).
        reward_model (`str` or [`~transformers.PreTrainedModel`], *optional*):
            Base preference model as a sequence-classification reward model (or its path). Give exactly one of
            `reward_model`, `reward_funcs` and `judge` (see [`WestOfNGenerator`]).
        reward_funcs (callable or `list` of callables, *optional*):
            Base preference model as reward function(s) `f(prompts, completions) -> list[float]`.
        judge (callable, *optional*):
            Base preference model as a pairwise judge `judge(prompts, completions_a, completions_b) -> list[float |
            None]` giving P(a preferred); best and worst are found by knockout tournaments.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The policy's tokenizer; loaded from the policy's path when omitted. The student's tokenizer is the
            trainer's `processing_class` and may differ.
        reward_processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The base reward model's tokenizer.
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization of the policy when loaded from a path.
        reward_quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization of the base reward model when loaded from a path.
    """

    def __init__(
        self,
        policy,
        args: WestOfNConfig | None = None,
        *,
        reward_model=None,
        reward_funcs=None,
        judge=None,
        processing_class=None,
        reward_processing_class=None,
        quantization_config=None,
        reward_quantization_config=None,
    ):
        self.args = args = args if args is not None else WestOfNConfig()
        self.pipeline = build_pipeline(
            policy,
            args,
            reward_model=reward_model,
            reward_funcs=reward_funcs,
            judge=judge,
            processing_class=processing_class,
            reward_processing_class=reward_processing_class,
            quantization_config=quantization_config,
            reward_quantization_config=reward_quantization_config,
        )
        self.preference, self.sampler = self.pipeline.preference, self.pipeline.sampler
        self.running_quantile = (
            RunningQuantile(args.confidence_quantile, args.confidence_window)
            if args.confidence_quantile is not None
            else None
        )
        self.tokenizer = None
        self.max_length: int | None = None
        self.metrics: dict[str, list[float]] | None = None
        self.process_index = 0
        self.num_batches = 0
        self.num_prompts = 0
        self.total_pairs = 0

    def attach(self, trainer) -> None:
        """Connect to a trainer: the student's tokenizer and `max_length`, the device, the metrics it logs."""
        self.tokenizer = trainer.processing_class
        self.max_length = trainer.args.max_length
        self.metrics = trainer._metrics["train"]
        self.process_index = trainer.accelerator.process_index
        self._padding = DataCollatorForPreference(
            pad_token_id=self.tokenizer.pad_token_id, pad_to_multiple_of=trainer.args.pad_to_multiple_of
        )
        device = trainer.accelerator.device
        for model in [getattr(self.sampler, "model", None), *self.preference.models()]:
            if model is not None and not is_quantized(model) and not hasattr(model, "hf_device_map"):
                model.to(device)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError(
                "WestOfNDataCollator generates with the policy, which must run in the main process, but it was called "
                "in a DataLoader worker. Set `dataloader_num_workers=0` in the training arguments."
            )
        if self.tokenizer is None:
            raise RuntimeError(
                "WestOfNDataCollator is not attached to a trainer. Pass it as `data_collator` to "
                "`trl_won.WestOfNRewardTrainer` (TRL's RewardTrainer cannot keep prompt-only rows)."
            )
        with_margin = any("margin" in e for e in examples)
        rows = [self._labeled_row(e, with_margin) for e in examples if not e.get(PROMPT_ONLY)]
        prompt_only = [e for e in examples if e.get(PROMPT_ONLY)]
        if prompt_only:
            rows += self._generate(prompt_only, with_margin)
        if self.metrics is not None and prompt_only:
            self.metrics["west_of_n/skipped_batch_rate"].append(float(not rows))
        if not rows:  # every prompt-only row was filtered out: a batch that trains nothing (see the trainer)
            placeholder = {"chosen_ids": prompt_only[0]["chosen_ids"], "rejected_ids": prompt_only[0]["chosen_ids"]}
            batch = self._padding([placeholder])
            batch[SKIP] = torch.tensor(True)
            return batch
        return self._padding(rows)

    @staticmethod
    def _labeled_row(example: dict, with_margin: bool) -> dict:
        row = {"chosen_ids": example["chosen_ids"], "rejected_ids": example["rejected_ids"]}
        if with_margin:
            row["margin"] = example.get("margin") or 0.0
        return row

    def _generate(self, examples: Sequence[dict], with_margin: bool) -> list[dict]:
        start = time.perf_counter()
        prompts = [e["prompt"] for e in examples]
        indices = list(range(self.num_prompts, self.num_prompts + len(prompts)))
        seed = derived_seed(self.args.sampling_seed, self.num_batches, self.process_index)
        self.num_prompts += len(prompts)
        self.num_batches += 1
        results = self.pipeline(prompts, indices, seed)
        kept, stats = self.filter(results)
        rows = []
        too_long = 0
        for result in kept:
            chosen = as_completion(result.prompt, result.completions[result.chosen])
            rejected = as_completion(result.prompt, result.completions[result.rejected])
            row = {
                "chosen_ids": tokenize_for_reward_model(self.tokenizer, result.prompt, chosen),
                "rejected_ids": tokenize_for_reward_model(self.tokenizer, result.prompt, rejected),
            }
            if self.max_length is not None and max(len(row["chosen_ids"]), len(row["rejected_ids"])) > self.max_length:
                too_long += 1
                continue
            if with_margin:
                row["margin"] = 0.0
            rows.append(row)
        self.total_pairs += len(rows)
        stats["filtered_length_rate"] = too_long / stats["_formed"] if stats["_formed"] else 0.0
        stats["pairs"] = len(rows)
        stats["keep_rate"] = len(rows) / len(prompts)
        stats["seconds"] = time.perf_counter() - start
        self._log(stats)
        return rows

    def filter(self, results: Sequence[PromptResult]) -> tuple[list[PromptResult], dict]:
        """Apply the confidence filter (absolute or running quantile) and the likelihood bounds to a batch's pairs."""
        args = self.args
        pairs = [r for r in results if r.is_pair]
        confidences = [r.confidence for r in pairs]
        threshold = args.confidence_threshold
        if self.running_quantile is not None:
            threshold = self.running_quantile.update(confidences)
        keep_confidence = confidence_mask(confidences, threshold) if threshold is not None else [True] * len(pairs)
        keep_likelihood = likelihood_mask(
            [r.chosen_logp for r in pairs], [r.rejected_logp for r in pairs], args.min_logp, args.max_logp
        )
        kept = [r for r, a, b in zip(pairs, keep_confidence, keep_likelihood, strict=True) if a and b]
        formed = len(pairs)
        stats = {
            "_formed": formed,
            "no_pair_rate": (len(results) - formed) / len(results) if results else 0.0,
            "filtered_confidence_rate": keep_confidence.count(False) / formed if formed else 0.0,
            "filtered_likelihood_rate": keep_likelihood.count(False) / formed if formed else 0.0,
        }
        if threshold is not None:
            stats["confidence_threshold"] = threshold
        if kept:
            stats["confidence"] = sum(r.confidence for r in kept) / len(kept)
            stats["margin"] = sum(r.chosen_score - r.rejected_score for r in kept) / len(kept)
            stats["chosen_logp"] = sum(r.chosen_logp for r in kept) / len(kept)
            stats["rejected_logp"] = sum(r.rejected_logp for r in kept) / len(kept)
        return kept, stats

    def _log(self, stats: dict) -> None:
        if self.metrics is None:
            return
        for key, value in stats.items():
            if not key.startswith("_"):
                self.metrics[f"west_of_n/{key}"].append(float(value))
        self.metrics["west_of_n/total_pairs"] = [float(self.total_pairs)]


def _mark_prompt_only(example: dict, index: int, allow: bool, dataset_name: str) -> dict:
    prompt_only = example.get("chosen") is None or example.get("rejected") is None
    if prompt_only:
        if example.get("prompt") is None:
            raise row_error(
                index,
                "prompt",
                f"the {dataset_name} row has neither a prompt nor both `chosen` and `rejected`.",
                "Give every row a prompt (West-of-N labels it) or a full preference pair.",
            )
        if not allow:
            raise row_error(
                index,
                "chosen",
                f"the {dataset_name} row has no `chosen`/`rejected`, but evaluation needs labeled pairs.",
                "Evaluate on human-labeled pairs only; prompt-only rows belong in `train_dataset`.",
            )
        empty = as_completion(example["prompt"], "")
        example["chosen"], example["rejected"] = empty, empty
    example[PROMPT_ONLY] = prompt_only
    return example


class WestOfNRewardTrainer(RewardTrainer):
    r"""
    TRL's [`~trl.RewardTrainer`] that also trains on prompt-only rows, labeled on the fly by a [`WestOfNDataCollator`].

    The training dataset mixes labeled pairs (`prompt`, `chosen`, `rejected`) with prompt-only rows (`chosen` and
    `rejected` set to `None`); [`mix_preferences_and_prompts`] builds such a mix. Every other argument is
    `RewardTrainer`'s. Without prompt-only rows and with the default collator it behaves exactly like
    `RewardTrainer`.

    Example:

    ```python
    >>> from trl import RewardConfig
    >>> from trl_won import WestOfNConfig, WestOfNDataCollator, WestOfNRewardTrainer, mix_preferences_and_prompts

    >>> collator = WestOfNDataCollator("Qwen/Qwen2.5-0.5B-Instruct", WestOfNConfig(n=8), reward_model="my-base-rm")
    >>> trainer = WestOfNRewardTrainer(
    ...     model="Qwen/Qwen2.5-0.5B-Instruct",
    ...     args=RewardConfig(output_dir="student"),
    ...     train_dataset=mix_preferences_and_prompts(human_pairs, unlabeled_prompts),
    ...     data_collator=collator,
    ... )
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "reward-trainer", "trl-won", "west-of-n"]

    def __init__(self, *args, **kwargs):
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        collator = kwargs.get("data_collator", args[2] if len(args) > 2 else None)
        if (
            isinstance(collator, WestOfNDataCollator)
            and training_args is not None
            and training_args.dataloader_num_workers
        ):
            raise ValueError(
                f"`dataloader_num_workers={training_args.dataloader_num_workers}`: WestOfNDataCollator generates with "
                "the policy in the main process, so DataLoader workers cannot run it. Set `dataloader_num_workers=0`."
            )
        if training_args is not None:
            # The collator turns a batch of rows into a variable number of pairs (2 sequences each).
            require_per_process_batches(training_args, "WestOfNRewardTrainer", "its batches hold 2 sequences per pair")
        super().__init__(*args, **kwargs)
        restore_adapter_dtypes(self.model, self.args)  # RewardTrainer's bfloat16 cast of QLoRA weights, without bf16
        if isinstance(self.data_collator, WestOfNDataCollator):
            self.data_collator.attach(self)
        elif (
            isinstance(self.train_dataset, Dataset)
            and PROMPT_ONLY in self.train_dataset.column_names
            and any(self.train_dataset[PROMPT_ONLY])
        ):
            raise ValueError(
                "The training dataset has prompt-only rows (no `chosen`/`rejected`), which need "
                "`data_collator=WestOfNDataCollator(...)` to be labeled."
            )

    def _prepare_dataset(self, dataset: Dataset | IterableDataset, processing_class, args, dataset_name: str):
        column_names = get_dataset_column_names(dataset)
        if PROMPT_ONLY not in column_names and not ("chosen_ids" in column_names and "rejected_ids" in column_names):
            map_kwargs = {}
            if isinstance(dataset, Dataset):
                map_kwargs = {"num_proc": args.dataset_num_proc, "desc": f"Finding prompt-only rows of {dataset_name}"}
            dataset = dataset.map(
                _mark_prompt_only,
                with_indices=True,
                fn_kwargs={"allow": dataset_name == "train", "dataset_name": dataset_name},
                **map_kwargs,
            )
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "prompt", PROMPT_ONLY]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs.pop(SKIP, None) is not None:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            loss = outputs.logits.sum() * 0.0
            return (loss, outputs) if return_outputs else loss
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

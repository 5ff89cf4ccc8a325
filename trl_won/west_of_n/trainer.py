"""A thin `RewardTrainer` subclass that lets prompt-only rows reach the [`WestOfNDataCollator`].

TRL's `RewardTrainer` stands in the way of online West-of-N in three places, each fixed here with the least change:

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

It also attaches the collator to the trainer (student tokenizer, `max_length`, device, metrics) and checks
`dataloader_num_workers == 0`, since generation must run in the main process.
"""

from datasets import Dataset, IterableDataset
from trl import RewardTrainer
from trl.data_utils import get_dataset_column_names

from ..data_utils import as_completion, require_per_process_batches, row_error
from .online import PROMPT_ONLY, SKIP, WestOfNDataCollator


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

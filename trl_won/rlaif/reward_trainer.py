"""Training a reward model on an AI labeler's soft preference labels (RLAIF distillation).

[`RLAIFRewardTrainer`] is TRL's `RewardTrainer` with one change: the Bradley-Terry loss becomes the cross-entropy with
the soft label `p` = the judge's probability that `chosen` is preferred (see [`soft_preference_loss`]). Datasets,
arguments, LoRA, quantization, evaluation and metrics are `RewardTrainer`'s. A dataset without the soft-label column
trains exactly as with `RewardTrainer` (hard labels, `margin` supported).
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from trl import RewardConfig, RewardTrainer
from trl.data_utils import get_dataset_column_names
from trl.trainer.reward_trainer import DataCollatorForPreference
from trl.trainer.utils import get_config_model_id

from ..data_utils import (
    DatasetFormatError,
    as_real,
    check_messages,
    require_columns,
    require_per_process_batches,
    row_error,
)
from ..models import restore_adapter_dtypes
from ..utils import CheckpointingOnByDefault
from .loss import soft_preference_loss


logger = logging.getLogger(__name__)

SOFT_LABEL = "soft_label"


@dataclass
class RLAIFRewardConfig(CheckpointingOnByDefault, RewardConfig):
    r"""
    Configuration class for the [`RLAIFRewardTrainer`]: TRL's [`~trl.RewardConfig`] plus the soft-label column.
    Activation checkpointing is on by default, as in TRL, under transformers' current name `activation_checkpointing`
    (its deprecated alias `gradient_checkpointing` is still accepted).

    Parameters:
        soft_label_column (`str`, *optional*, defaults to `"soft_label"`):
            Column holding `p`, the probability that `chosen` is preferred over `rejected`, in [0, 1] (what
            [`label_preferences`] writes). Rows without the column train with `p = 1` (plain Bradley-Terry).
    """

    soft_label_column: str = field(
        default=SOFT_LABEL,
        metadata={
            "help": "Column holding the probability that `chosen` is preferred over `rejected`, in [0, 1]. Without "
            "this column the loss is the plain Bradley-Terry loss of `RewardTrainer`."
        },
    )


@dataclass
class DataCollatorForSoftPreference(DataCollatorForPreference):
    """[`~trl.trainer.reward_trainer.DataCollatorForPreference`] that also batches a `"soft_label"` per example."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        output = super().torch_call(examples)
        if SOFT_LABEL in examples[0]:
            labels = torch.tensor([float(example[SOFT_LABEL]) for example in examples], dtype=torch.float)
            if not torch.isfinite(labels).all() or (labels < 0).any() or (labels > 1).any():
                raise ValueError(f"Soft labels must be finite numbers in [0, 1], got {labels.tolist()}.")
            output[SOFT_LABEL] = labels
        return output


def _check_pair(example: dict, row: int) -> None:
    """`chosen` and `rejected` must be strings or lists of messages, lists when the prompt is one."""
    prompt = example.get("prompt")
    for column in ("chosen", "rejected"):
        value = example[column]
        if isinstance(value, list):
            check_messages(value, row, column)
        elif not isinstance(value, str) or isinstance(prompt, list):
            expected = "a list of messages, as the prompt is" if isinstance(prompt, list) else "a string or messages"
            raise row_error(row, column, f"expected {expected}, got {value!r:.80}.", "Fix or drop the row.")


class RLAIFRewardTrainer(RewardTrainer):
    """TRL's `RewardTrainer` trained on soft labels with the RLAIF distillation loss.

    Takes the same arguments and datasets as [`~trl.RewardTrainer`] (preference data `prompt`/`chosen`/`rejected`,
    standard or conversational, or pre-tokenized `chosen_ids`/`rejected_ids`), plus a soft-label column (default
    `soft_label`, see [`RLAIFRewardConfig`]). The loss per pair is

        -[ p * log sigmoid(r_chosen - r_rejected) + (1 - p) * log sigmoid(r_rejected - r_chosen) ]

    Example:

    ```python
    from trl_won.rlaif import RLAIFRewardConfig, RLAIFRewardTrainer, label_preferences

    labeled = label_preferences(pairs, judge, store=LabelStore("labels.sqlite"))
    trainer = RLAIFRewardTrainer(
        model="Qwen/Qwen2.5-0.5B-Instruct", args=RLAIFRewardConfig("rm-rlaif"), train_dataset=labeled
    )
    trainer.train()
    ```
    """

    _tag_names = ["trl", "reward-trainer", "trl_won", "rlaif"]
    _name = "RLAIF Reward"

    def __init__(self, model, args: RewardConfig | None = None, data_collator=None, *rest, **kwargs):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = RLAIFRewardConfig(f"{model_name.split('/')[-1]}-RLAIF-Reward")
        # A batch holds 2 sequences (chosen, rejected) per soft label.
        require_per_process_batches(args, "RLAIFRewardTrainer", "its batches hold two sequences per soft label")
        # Read by `_prepare_dataset`, which the parent's __init__ calls.
        self.soft_label_column = getattr(args, "soft_label_column", SOFT_LABEL)
        self._warned_hard_labels = False
        super().__init__(model, args, data_collator, *rest, **kwargs)
        restore_adapter_dtypes(self.model, self.args)  # RewardTrainer's bfloat16 cast of QLoRA weights, without bf16
        if data_collator is None:
            self.data_collator = DataCollatorForSoftPreference(
                pad_token_id=self.data_collator.pad_token_id, pad_to_multiple_of=self.data_collator.pad_to_multiple_of
            )

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if next(iter(dataset), None) is None:
            raise DatasetFormatError(f"The {dataset_name} dataset has no rows.")
        columns = get_dataset_column_names(dataset)
        if not {"chosen_ids", "rejected_ids"} <= set(columns):
            require_columns(
                columns,
                ["chosen", "rejected"],
                dataset_name,
                "Give each row 'chosen' and 'rejected' (and a 'prompt'), or tokenized 'chosen_ids'/'rejected_ids'.",
            )
            if isinstance(dataset, Dataset):
                for row, example in enumerate(dataset):
                    _check_pair(example, row)
            else:  # checked as the rows stream in
                dataset = dataset.map(lambda example, row: _check_pair(example, row) or example, with_indices=True)
        if dataset_name == "train" and self.soft_label_column != SOFT_LABEL and self.soft_label_column not in columns:
            raise DatasetFormatError(
                f"The {dataset_name} dataset has no column '{self.soft_label_column}' (the configured "
                f"`soft_label_column`); it has {list(columns)}. Fix the column name, or leave `soft_label_column` at "
                f"its default to train without soft labels."
            )
        if self.soft_label_column in columns:
            if "margin" in columns:
                raise DatasetFormatError(
                    f"The {dataset_name} dataset has both a '{self.soft_label_column}' column and a 'margin' column. "
                    "The soft-label loss has no margin: drop one of the two columns."
                )
            if self.soft_label_column != SOFT_LABEL:
                if SOFT_LABEL in columns:
                    raise DatasetFormatError(
                        f"The {dataset_name} dataset has both '{self.soft_label_column}' (the configured soft-label "
                        f"column) and '{SOFT_LABEL}'. Drop or rename '{SOFT_LABEL}'."
                    )
                dataset = dataset.rename_column(self.soft_label_column, SOFT_LABEL)
            column = self.soft_label_column

            def check_soft_label(example, row):
                value = as_real(example[SOFT_LABEL])
                if value is None or not math.isfinite(value) or not 0 <= value <= 1:
                    raise row_error(
                        row,
                        column,
                        f"the soft label is {example[SOFT_LABEL]!r:.80}, not a probability in [0, 1].",
                        "Use the judge's probability that 'chosen' is preferred, or drop the row.",
                    )
                return example

            if isinstance(dataset, Dataset):
                for row, value in enumerate(dataset[SOFT_LABEL]):
                    check_soft_label({SOFT_LABEL: value}, row)
            else:  # checked as the rows stream in
                dataset = dataset.map(check_soft_label, with_indices=True)
        elif not self._warned_hard_labels:
            logger.warning(
                "The %s dataset has no '%s' column: training with hard labels (p = 1), as RewardTrainer does.",
                dataset_name,
                self.soft_label_column,
            )
            self._warned_hard_labels = True
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", SOFT_LABEL]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        soft_labels = inputs.pop(SOFT_LABEL, None)
        if soft_labels is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # The parent runs the forward pass and records RewardTrainer's metrics (rewards, accuracy, margin); only the
        # loss changes, computed from the same rewards.
        _, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        loss = soft_preference_loss(rewards_chosen, rewards_rejected, soft_labels.to(rewards_chosen.device))
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)
        return (loss, outputs) if return_outputs else loss

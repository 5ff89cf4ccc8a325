"""Training the demo's tiny models with TRL's own trainers: SFT for the policy and the judge, RewardTrainer for RMs.

Each function takes the model (object or path) and tokenizer, the data as plain Python rows and a [`TrainSettings`],
and returns the trained model in eval mode. They are the paths a user's TRL script takes, so a real model given by
path (with `peft_config` on a GPU) goes through the same code.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback
from trl.trainer.utils import pad


@dataclass(frozen=True)
class TrainSettings:
    """Training-loop settings shared by the demo's trainers.

    Args:
        output_dir (`str`): Trainer output directory (nothing is saved there unless you save).
        epochs (`float`): Number of epochs.
        learning_rate (`float`): Peak learning rate (cosine decay after a 5% warmup).
        batch_size (`int`, *optional*, defaults to `32`): Examples (pairs, for reward models) per step.
        seed (`int`, *optional*, defaults to `0`): Trainer seed (initialization of new heads, data order).
        progress (`tqdm`, *optional*): A progress bar the training steps advance (the demo's bar of the running
            stage, shared by every trainer of the stage); `None`: quiet. Trainers never print their own bars or logs.
    """

    output_dir: str
    epochs: float
    learning_rate: float
    batch_size: int = 32
    seed: int = 0
    progress: Any = None

    def quiet(self, trainer):
        """Make a trainer built with [`trainer_kwargs`] advance `progress` instead of printing its logs."""
        trainer.remove_callback(PrinterCallback)
        if self.progress is not None:
            trainer.add_callback(StepProgress(self.progress))
        return trainer

    def trainer_kwargs(self) -> dict:
        return dict(
            output_dir=self.output_dir,
            num_train_epochs=self.epochs,
            learning_rate=self.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            per_device_train_batch_size=self.batch_size,
            seed=self.seed,
            data_seed=self.seed,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            bf16=False,
        )


class StepProgress(TrainerCallback):
    """Advances a progress bar (shared by several trainers) by each optimizer step, its total growing by each
    trainer's steps when it starts."""

    def __init__(self, bar):
        self.bar = bar

    def on_train_begin(self, args, state, control, **kwargs):
        # No refresh: a bar drawn before its `delay` is not cleared when it closes (the next line would be glued on).
        self.bar.total = (self.bar.total or 0) + state.max_steps

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)


def train_sft(model, tokenizer, prompts: Sequence, completions: Sequence, settings: TrainSettings, peft_config=None):
    """Supervised fine-tuning on prompt-completion rows with TRL's `SFTTrainer` (loss on completion tokens only).

    Used for the policy (conversational prompts and answers) and for the judge (a plain-text judge request and the
    answer "1" or "2").
    """
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_dict({"prompt": list(prompts), "completion": list(completions)})
    args = SFTConfig(
        **settings.trainer_kwargs(), max_length=None, dataset_num_proc=None, activation_checkpointing=True
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    settings.quiet(trainer).train()
    return trainer.model.eval()


def train_reward_model(
    model,
    tokenizer,
    prompts: Sequence,
    chosen: Sequence,
    rejected: Sequence,
    settings: TrainSettings,
    soft_labels: Sequence[float] | None = None,
    peft_config=None,
):
    """Train a sequence-classification reward model on preference rows.

    With hard labels (`chosen` preferred) it is TRL's `RewardTrainer`; with `soft_labels` (the probability that
    `chosen` is preferred, e.g. an RLAIF judge's) it is [`~trl_won.rlaif.RLAIFRewardTrainer`], which distills them.
    """
    from trl import RewardConfig, RewardTrainer

    from ..rlaif import RLAIFRewardConfig, RLAIFRewardTrainer

    columns = {"prompt": list(prompts), "chosen": list(chosen), "rejected": list(rejected)}
    config_class, trainer_class = RewardConfig, RewardTrainer
    if soft_labels is not None:
        columns["soft_label"] = list(soft_labels)
        config_class, trainer_class = RLAIFRewardConfig, RLAIFRewardTrainer
    args = config_class(**settings.trainer_kwargs(), max_length=None, activation_checkpointing=True)
    if getattr(model, "config", None) is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(columns),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    settings.quiet(trainer).train()
    return trainer.model.eval()


def answer_token_ids(tokenizer, ending: str, answers: Sequence[str]) -> list[int]:
    """The token id each answer adds after `ending`; a `ValueError` if an answer is not exactly one new token."""
    prefix = tokenizer(ending)["input_ids"]
    ids = []
    for answer in answers:
        full = tokenizer(ending + answer)["input_ids"]
        if full[: len(prefix)] != prefix or len(full) != len(prefix) + 1:
            raise ValueError(
                f"The tokenizer does not make {answer!r} a single token after {ending!r} (got "
                f"{tokenizer.convert_ids_to_tokens(full[len(prefix) :])}); the judge cannot be read at one position."
            )
        ids.append(full[-1])
    return ids


def answer_loss(logits, target_first):
    """Cross-entropy of the judge's two-way answer distribution against soft targets.

    Args:
        logits (`torch.Tensor`): `(batch, 2)` logits of the answers "1" and "2" at the answer position.
        target_first (`torch.Tensor`): `(batch,)` target probability of "1".

    Returns:
        `torch.Tensor`: The mean over the batch of `-(q log p1 + (1 - q) log p2)`, `p = softmax(logits)`.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(target_first * logp[:, 0] + (1 - target_first) * logp[:, 1]).mean()


def train_judge_lm(
    model, tokenizer, requests: Sequence[str], targets: Sequence[float], settings: TrainSettings, answer_ids
):
    """Teach a causal LM to answer "1" with probability `target` after each judge request (a short training loop).

    The loss is the LM's cross-entropy at the answer position, restricted to the two answer tokens and taken against
    the soft target (the expected loss of sampling hard "1"/"2" labels, without the sampling noise). Requests are
    left-padded so that every answer position is the last one. Batches keep the given order of consecutive requests
    in groups (so both orders of a pair, given one after the other, stay in one batch); groups are shuffled per epoch.
    """
    import math
    import random

    from transformers import get_cosine_schedule_with_warmup

    encoded = [tokenizer(r)["input_ids"] for r in requests]
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    steps_per_epoch = math.ceil(len(encoded) / settings.batch_size)
    total_steps = max(1, round(steps_per_epoch * settings.epochs))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(0.05 * total_steps), total_steps)
    rng = random.Random(settings.seed)
    starts = list(range(0, len(encoded), 2))
    model.train()
    step = 0
    progress = settings.progress
    if progress is not None:
        progress.total = (progress.total or 0) + total_steps  # shown with the next update (see StepProgress)
    while step < total_steps:
        rng.shuffle(starts)
        order = [i for s in starts for i in (s, s + 1) if i < len(encoded)]
        for begin in range(0, len(order), settings.batch_size):
            if step >= total_steps:
                break
            batch = order[begin : begin + settings.batch_size]
            rows = [torch.tensor(encoded[i], dtype=torch.long) for i in batch]
            input_ids = pad(rows, pad_id, "left")
            attention_mask = pad([torch.ones_like(r) for r in rows], 0, "left")
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            out = model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                position_ids=position_ids.to(device),
                logits_to_keep=1,
            )
            target = torch.tensor([targets[i] for i in batch], device=device)
            loss = answer_loss(out.logits[:, -1, answer_ids], target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if progress is not None:
                progress.update(1)
    return model.eval()

"""Online RRHF: sample candidates from the current policy during training, score them, rank them.

The training loop is GRPO's: the dataloader yields a *generation round* of `per_device_train_batch_size *
steps_per_generation` prompts per process, repeated `steps_per_generation` times (TRL's `RepeatSampler`). At the first
micro-batch of a round the policy samples `num_generations` completions per prompt (one `sample_completions` call per
process, prompts prefilled once, seeded with `derived_seed(seed, round, process_index)`), the reward functions score
every candidate (the samples after the row's fixed `completions`, if any) as `GRPOTrainer` calls them, and the round is
cut into `steps_per_generation` collated micro-batches of `per_device_train_batch_size` prompts, kept in a buffer. Each
micro-batch is then trained on exactly as an offline batch holding the same candidates and rewards.

Generation happens in `get_batch_samples`, before the optimizer step's forward passes, so that the step's loss is
normalized by the exact number of prompts it trains on (groups can be skipped, see below). The buffer and the
micro-batch counter are saved in every checkpoint (`rrhf_generation_buffer-<process>.pt`), so a run resumed mid-round
trains on the same candidates as an uninterrupted one.

Rewards: a candidate's reward is the weighted sum of its reward functions' scores, skipping `None` ("does not apply")
as GRPO's `nansum` does. A candidate for which every function returned `None` cannot be ranked and is dropped; a group
left with fewer than 2 scored candidates is skipped (a warning, and the `skipped_groups` metric counts them).
"""

import logging
import math
import os
from collections import defaultdict
from typing import Any

import torch
from accelerate.utils import gather_object
from datasets import IterableDataset
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import is_rich_available
from trl.trainer.utils import RepeatSampler, nanstd, print_prompt_completions_sample, repeat_iterable_dataset

from ..data_utils import as_completion, row_error, tokenize_prompt_completion
from ..generation import Sample, SamplingParams, prompt_ids_for_generation, sample_completions
from ..rewards import RewardModelScorer, nan_weighted_sum, reward_func_name, rewards_per_function
from ..utils import derived_seed
from .data import DataCollatorForRRHF


logger = logging.getLogger(__name__)

ROW_INDEX = "_rrhf_row"  # the dataset row of an online example, added when the dataset is checked; for error messages
NOT_REWARD_KWARGS = ("prompt", "completion", "completions", "completion_ids", ROW_INDEX)
BUFFER_FILE = "rrhf_generation_buffer-{process}.pt"


def sampling_params(args) -> SamplingParams:
    """The transformers sampling settings of an [`RRHFConfig`] (GRPO's generation settings)."""
    return SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_completion_length,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        generation_kwargs=args.generation_kwargs,
    )


def fixed_completion_ids(tokenizer, prompt_ids: list[int], prompt, completion, row: int | None) -> list[int]:
    """The token ids of a row's fixed completion after `prompt_ids` (the prompt as the sampler tokenizes it), from
    TRL's prompt-completion tokenization; an error naming the row if they do not continue `prompt_ids`."""
    head, tail = tokenize_prompt_completion(tokenizer, prompt, completion)
    full = head + tail
    if full[: len(prompt_ids)] != prompt_ids or len(full) == len(prompt_ids):
        raise row_error(
            row,
            "completions",
            f"the tokens of the fixed completion {completion!r:.60} do not continue the prompt's tokens as the "
            "sampler tokenizes the prompt (a token merges across the boundary), so it cannot be ranked with the "
            "samples.",
            "Start the completion with a space or a new line, or drop it.",
        )
    return full[len(prompt_ids) :]


class EpochSeededRepeatSampler(RepeatSampler):
    """TRL's `RepeatSampler` whose order in each epoch depends only on `(seed, epoch)`.

    `RepeatSampler` seeds one generator when it is built and draws every epoch's permutation from it, so a run resumed
    in epoch N (a new sampler) would repeat epoch 0's order. Here `set_epoch` (called by `Trainer` at each epoch)
    reseeds the generator with `derived_seed(seed, epoch)`, so a resumed run sees the same prompts in the same order
    as an uninterrupted one in every epoch.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(derived_seed(self.seed, epoch))


def _as_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The online collator: a batch is the list of its rows (they are sampled for in `get_batch_samples`)."""
    return rows


class OnlineRRHFMixin:
    """The online half of [`RRHFTrainer`]: its dataloader, generation rounds, scoring, metrics and buffer checkpoints.

    Active when `self.num_generations > 0` (set by the trainer from `args.num_generations` and the dataset).
    """

    def _init_online(self) -> None:
        self._online_step = 0  # micro-batches trained on so far (all rounds)
        self._generation_buffer: list[dict[str, torch.Tensor]] | None = None
        self._skipped_groups = 0
        self._completion_logs: dict[str, list] = defaultdict(list)
        self._pending_metrics: dict[str, list[float]] = defaultdict(list)  # from reward functions' `log_metric`
        self._pending_columns: dict[str, list] = defaultdict(list)  # from reward functions' `log_extra`
        self._vllm_sampler = None
        if not self.num_generations:
            return
        self.reward_func_names = [reward_func_name(func) for func in self.reward_funcs]
        weights = self.args.reward_weights
        if weights is not None and len(weights) != len(self.reward_funcs):
            raise ValueError(
                f"`reward_weights` has {len(weights)} entries but there are {len(self.reward_funcs)} reward "
                "functions; give one weight per reward function."
            )
        if self.args.generation_batch_size is None:  # num_generations came from the dataset: derive it as GRPO does
            self.args.generation_batch_size = (
                self.args.per_device_train_batch_size
                * self.accelerator.num_processes
                * self.args.steps_per_generation
                * self.num_generations
            )
        dataset, per_round = self.train_dataset, self._prompts_per_round()
        if not isinstance(dataset, IterableDataset) and len(dataset) < per_round:
            raise ValueError(
                f"The train dataset has {len(dataset)} prompt(s), fewer than one generation round takes: {per_round} "
                f"(per_device_train_batch_size={self.args.per_device_train_batch_size} prompts x "
                f"{self.accelerator.num_processes} process(es) x steps_per_generation={self.args.steps_per_generation}"
                "), so nothing would be trained (an incomplete round is dropped, as in GRPO). Lower "
                "`per_device_train_batch_size` or `steps_per_generation`, or give more prompts."
            )
        for func in self.reward_funcs:  # reward models score on the training device, unless placed by a device map
            if isinstance(func, RewardModelScorer) and getattr(func.model, "hf_device_map", None) is None:
                if not getattr(func.model, "is_loaded_in_4bit", False) and not getattr(
                    func.model, "is_loaded_in_8bit", False
                ):
                    func.model.to(self.accelerator.device)
        if not self.args.use_vllm and (self.is_fsdp_enabled or is_deepspeed_zero3_enabled()):
            raise NotImplementedError(
                "Online RRHF samples with transformers' `generate` on the training model, which under "
                f"{'FSDP' if self.is_fsdp_enabled else 'DeepSpeed ZeRO-3'} holds only a shard of each parameter on "
                "each process: sampling is not supported there. Train without parameter sharding (DDP, ZeRO-1/2, "
                "one GPU with LoRA/QLoRA), or set `use_vllm=True` (TRL's vLLM weight sync gathers the parameters)."
            )
        self._collator = DataCollatorForRRHF(self.processing_class.pad_token_id, self.args.pad_to_multiple_of)
        if self.args.use_vllm:
            try:
                from .vllm import VLLMSampler
            except ModuleNotFoundError as error:
                if error.name not in ("trl_won.rrhf.vllm", "vllm"):
                    raise
                if error.name == "vllm":
                    raise ImportError(
                        "`use_vllm=True` needs vLLM: `pip install vllm` (on a CUDA machine), or set use_vllm=False to "
                        "sample with transformers."
                    ) from error
                raise NotImplementedError(
                    "`use_vllm=True`: this installation of trl_won has no `trl_won.rrhf.vllm` module (its VLLMSampler "
                    "samples online RRHF candidates with vLLM). Set use_vllm=False to sample with transformers."
                ) from error
            self._vllm_sampler = VLLMSampler(self)

    # ----- dataloader: one generation round per batch, repeated `steps_per_generation` times -----

    def _prompts_per_round(self) -> int:
        """Prompts of one generation round, all processes (GRPO's `generation_batch_size / num_generations`)."""
        return self.args.per_device_train_batch_size * self.accelerator.num_processes * self.args.steps_per_generation

    def get_train_dataloader(self):
        if not self.num_generations:
            return super().get_train_dataloader()
        dataset = self.train_dataset
        if isinstance(dataset, IterableDataset):
            if self.args.shuffle_dataset:
                dataset = dataset.shuffle(seed=self.args.seed)
            dataset = repeat_iterable_dataset(
                dataset,
                mini_repeat_count=1,
                batch_size=self._prompts_per_round(),
                repeat_count=self.args.steps_per_generation,
            )
        collator, self.data_collator = self.data_collator, _as_rows
        try:
            return self._get_dataloader(
                dataset=dataset,
                description="Training",
                batch_size=self._train_batch_size * self.args.steps_per_generation,
                sampler_fn=self._get_train_sampler,
                is_training=True,
            )
        finally:
            self.data_collator = collator

    def _get_train_sampler(self, train_dataset=None):
        if not self.num_generations:
            return super()._get_train_sampler(train_dataset)
        self._train_sampler = EpochSeededRepeatSampler(
            data_source=train_dataset if train_dataset is not None else self.train_dataset,
            mini_repeat_count=1,
            batch_size=self._prompts_per_round(),
            repeat_count=self.args.steps_per_generation,
            shuffle=self.args.shuffle_dataset,
            seed=self.args.seed,
        )
        return self._train_sampler

    def get_resumed_dataloader(self, dataloader, num_batches):
        # Resuming mid-epoch, `Trainer` calls `set_epoch` on a dataloader whose batches are skipped by accelerate's
        # `SkipBatchSampler`, which does not pass it on to the sampler: set the resumed epoch here.
        sampler = getattr(self, "_train_sampler", None)
        if self.num_generations and sampler is not None:
            sampler.set_epoch(int(self.state.epoch))
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _remove_unused_columns(self, dataset, description=None):
        if self.num_generations and description == "Training":  # every column may feed a reward function
            return dataset
        return super()._remove_unused_columns(dataset, description)

    def _get_collator_with_removed_columns(self, data_collator, description=None):
        if self.num_generations and description == "Training":
            return data_collator
        return super()._get_collator_with_removed_columns(data_collator, description)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        if not self.num_generations:
            return super().get_batch_samples(epoch_iterator, num_batches, device)
        batch_samples = []
        for _ in range(num_batches):
            try:
                rows = next(epoch_iterator)
            except StopIteration:
                break
            batch_samples.append(self._online_micro_batch(rows))
        return batch_samples, None

    def _online_micro_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        position = self._online_step % self.args.steps_per_generation
        if position == 0 or self._generation_buffer is None:
            if position != 0:
                logger.warning(
                    "No generation buffer for micro-batch %d of a generation round (a checkpoint saved without it): "
                    "sampling the round again; the run will differ from an uninterrupted one.",
                    position,
                )
            self._generation_buffer = self._generate_round(rows, self._online_step // self.args.steps_per_generation)
        self._online_step += 1
        return self._generation_buffer[position]

    # ----- one generation round -----

    def _sample(self, prompts: list, num_generations: int, seed: int) -> list[list[Sample]]:
        """`num_generations` samples per prompt from the current policy (LoRA/QLoRA adapters active).

        With `use_vllm=True` this is `VLLMSampler.sample(prompts, num_generations, seed)` from
        `trl_won.rrhf.vllm`, whose contract is: `VLLMSampler(trainer)` is built once, after `Trainer.__init__`; its
        `sample` returns, for each prompt in order, `num_generations` [`~trl_won.generation.Sample`] objects (`text`,
        `token_ids` up to and including the first EOS, `finished`), sampled with `seed`, and pushes the policy's
        weights to vLLM first whenever they changed since the last call. Otherwise [`sample_completions`] samples,
        with every prompt of the call in one batch and each prompt prefilled once (`share_prompt=True`).
        """
        if self._vllm_sampler is not None:
            return self._vllm_sampler.sample(prompts, num_generations, seed)
        return sample_completions(
            self.model,
            self.processing_class,
            prompts,
            num_generations,
            sampling_params(self.args),
            batch_size=len(prompts) * num_generations,
            seed=seed,
            share_prompt=True,
        )

    def _generate_round(self, rows: list[dict[str, Any]], round_index: int) -> list[dict[str, torch.Tensor]]:
        """Sample, score and rank one generation round; return its `steps_per_generation` collated micro-batches."""
        args, tokenizer = self.args, self.processing_class
        seed = derived_seed(args.seed, round_index, self.accelerator.process_index)
        prompts = [row["prompt"] for row in rows]
        samples = self._sample(prompts, self.num_generations, seed)
        row_numbers = [row.get(ROW_INDEX) for row in rows]
        where = f"step {self.state.global_step + 1} (generation round {round_index}, dataset rows {row_numbers})"

        # Candidates: the row's fixed completions first, then its samples.
        pools = []
        for row, row_samples in zip(rows, samples, strict=True):
            prompt = row["prompt"]
            prompt_ids = prompt_ids_for_generation(tokenizer, prompt)
            fixed = list(row.get("completions") or [])
            pools.append(
                {
                    "prompt_ids": prompt_ids,
                    "completions": fixed + [as_completion(prompt, sample.text) for sample in row_samples],
                    "completion_ids": [
                        fixed_completion_ids(tokenizer, prompt_ids, prompt, c, row.get(ROW_INDEX)) for c in fixed
                    ]
                    + [list(sample.token_ids) for sample in row_samples],
                }
            )
        flat = [(row, i) for row, pool in zip(rows, pools, strict=True) for i in range(len(pool["completions"]))]
        extra_keys = [key for key in rows[0] if key not in NOT_REWARD_KWARGS]
        scores = rewards_per_function(
            self.reward_funcs,
            [row["prompt"] for row, _ in flat],
            [c for pool in pools for c in pool["completions"]],
            {
                **{key: [row.get(key) for row, _ in flat] for key in extra_keys},  # first: GRPO's own names win
                "completion_ids": [ids for pool in pools for ids in pool["completion_ids"]],
                "trainer_state": self.state,
                "log_extra": self._log_completion_extra,
                "log_metric": self._log_metric,
            },
            batch_description=where,
        )
        totals = nan_weighted_sum(scores, args.reward_weights)

        # Rank: drop unscorable (or empty) candidates, skip groups left with fewer than 2.
        tokenized, start, skipped = [], 0, 0
        for pool in pools:
            count = len(pool["completions"])
            keep = [
                i for i in range(count) if not math.isnan(totals[start + i]) and len(pool["completion_ids"][i]) > 0
            ]
            if len(keep) < 2:
                tokenized.append(None)
                skipped += 1
            else:
                limit = None if args.max_length is None else args.max_length - len(pool["prompt_ids"])
                tokenized.append(
                    {
                        "prompt_ids": pool["prompt_ids"],
                        "completion_ids": [pool["completion_ids"][i][:limit] for i in keep],
                        "rewards": [totals[start + i] for i in keep],
                    }
                )
            start += count
        if skipped:
            logger.warning(
                "%d prompt group(s) of %s had fewer than 2 candidates with a reward (every reward function returned "
                "None for the others) and are skipped.",
                skipped,
                where,
            )
        self._record_round_metrics(rows, pools, samples, scores, totals, skipped)

        size = args.per_device_train_batch_size
        micro_batches = []
        for step in range(args.steps_per_generation):
            groups = [group for group in tokenized[step * size : (step + 1) * size] if group is not None]
            micro_batches.append(self._collator(groups) if groups else _empty_batch())
        return micro_batches

    # ----- metrics and the completions table -----

    def _log_completion_extra(self, column: str, values: list) -> None:
        """`log_extra` of a reward function (as in GRPO): a completions-table column, one value per candidate."""
        self._pending_columns[column].extend(values)

    def _log_metric(self, name: str, value: float) -> None:
        """`log_metric` of a reward function (as in GRPO): a scalar averaged over the logging interval."""
        self._pending_metrics[name].append(value)

    def _record_round_metrics(self, rows, pools, samples, scores, totals, skipped: int) -> None:
        metrics = self._metrics["train"]
        local = {
            "scores": [list(column) for column in scores],
            "totals": list(totals),
            "lengths": [len(s.token_ids) for row_samples in samples for s in row_samples],
            "clipped": [not s.finished for row_samples in samples for s in row_samples],
            "skipped": skipped,
        }
        everything = gather_object([local]) if self.accelerator.num_processes > 1 else [local]
        for i, name in enumerate(self.reward_func_names):
            values = torch.tensor([v for part in everything for v in part["scores"][i]], dtype=torch.float32)
            metrics[f"rewards/{name}/mean"].append(torch.nanmean(values).item())
            metrics[f"rewards/{name}/std"].append(nanstd(values).item())
        rewards = torch.tensor([v for part in everything for v in part["totals"]], dtype=torch.float32)
        metrics["reward"].append(torch.nanmean(rewards).item())
        metrics["reward_std"].append(nanstd(rewards).item())
        lengths = torch.tensor([v for part in everything for v in part["lengths"]], dtype=torch.float32)
        metrics["completions/mean_length"].append(lengths.mean().item())
        metrics["completions/min_length"].append(lengths.min().item())
        metrics["completions/max_length"].append(lengths.max().item())
        clipped = torch.tensor([v for part in everything for v in part["clipped"]], dtype=torch.float32)
        metrics["completions/clipped_ratio"].append(clipped.mean().item())
        self._skipped_groups += sum(part["skipped"] for part in everything)
        metrics["skipped_groups"] = [float(self._skipped_groups)]
        # Metrics and columns logged by reward functions; names sorted so that every process gathers in one order.
        pending_metrics, self._pending_metrics = self._pending_metrics, defaultdict(list)
        pending_columns, self._pending_columns = self._pending_columns, defaultdict(list)
        for name in sorted({n for names in gather_object([list(pending_metrics)]) for n in names}):
            values = [v for part in gather_object([pending_metrics.get(name, [])]) for v in part]
            if values:
                metrics[name].append(sum(values) / len(values))

        if self.args.log_completions:
            flat = [
                (row["prompt"], completion)
                for row, pool in zip(rows, pools, strict=True)
                for completion in pool["completions"]
            ]
            logs = self._completion_logs
            logs["prompt"].extend(gather_object([p for p, _ in flat]))
            logs["completion"].extend(gather_object([c for _, c in flat]))
            for i, name in enumerate(self.reward_func_names):
                logs[f"rewards/{name}"].extend(gather_object(list(scores[i])))
            logs["reward"].extend(gather_object(list(totals)))
            for column in sorted({c for columns in gather_object([list(pending_columns)]) for c in columns}):
                values = pending_columns.get(column) or [None] * len(flat)
                logs[f"extra/{column}"].extend(gather_object(list(values)))

    def _log_completions_table(self) -> None:
        """Print (rich) and log (wandb, trackio) the candidates of the rounds since the last log, as GRPO does."""
        logs, self._completion_logs = self._completion_logs, defaultdict(list)
        if not self.num_generations or not self.args.log_completions or not logs["prompt"]:
            return
        if not self.accelerator.is_main_process:
            return
        rewards = {name: logs[f"rewards/{name}"] for name in self.reward_func_names}
        extra = {key.removeprefix("extra/"): values for key, values in logs.items() if key.startswith("extra/")}
        if is_rich_available():
            print_prompt_completions_sample(
                logs["prompt"],
                logs["completion"],
                rewards,
                None,
                self.state.global_step,
                self.args.num_completions_to_print,
                extra={"reward": logs["reward"], **extra},
            )
        report_to = self.args.report_to or []
        table = {
            "step": [self.state.global_step] * len(logs["prompt"]),
            "prompt": [str(p) for p in logs["prompt"]],
            "completion": [str(c) for c in logs["completion"]],
            **rewards,
            "reward": logs["reward"],
            **{column: [str(v) for v in values] for column, values in extra.items()},
        }
        if "wandb" in report_to:
            import wandb

            if wandb.run is not None:
                wandb.log({"completions": wandb.Table(columns=list(table), data=list(zip(*table.values())))})
        if "trackio" in report_to:
            import pandas as pd
            import trackio

            trackio.log({"completions": trackio.Table(dataframe=pd.DataFrame(table))})

    # ----- checkpoints: the generation buffer, so that a resumed run trains on the same candidates -----

    def _save_generation_buffer(self, trial) -> None:
        if not self.num_generations:
            return
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, BUFFER_FILE.format(process=self.accelerator.process_index))
        state = {"online_step": self._online_step, "buffer": self._generation_buffer, "skipped": self._skipped_groups}
        torch.save(state, path)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if not self.num_generations or checkpoint is None:
            return
        path = os.path.join(checkpoint, BUFFER_FILE.format(process=self.accelerator.process_index))
        if not os.path.exists(path):
            logger.warning(
                "%s has no generation buffer (%s): the current generation round is sampled again on resume.",
                checkpoint,
                os.path.basename(path),
            )
            self._online_step = self.state.global_step * self.args.gradient_accumulation_steps
            return
        try:
            state = torch.load(path, weights_only=True)
            self._online_step, self._generation_buffer = int(state["online_step"]), state["buffer"]
            self._skipped_groups = int(state.get("skipped", 0))
        except Exception as error:
            raise RuntimeError(
                f"The generation buffer {path} is damaged ({type(error).__name__}: {error}). Delete the file to "
                "sample the current round again on resume (the run then differs from an uninterrupted one), or "
                "resume from an earlier checkpoint."
            ) from error


def _empty_batch() -> dict[str, torch.Tensor]:
    """A micro-batch without prompts (all of its groups were skipped): it trains on nothing."""
    empty = torch.zeros(0, dtype=torch.long)
    return {
        "num_completions": empty,
        "input_ids": torch.zeros(0, 1, dtype=torch.long),
        "attention_mask": torch.zeros(0, 1, dtype=torch.long),
        "completion_mask": torch.zeros(0, 1, dtype=torch.long),
        "rewards": torch.zeros(0),
        "group_ids": empty,
    }

import math
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers import (
    AutoModelForCausalLM,
    DataCollator,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    set_seed,
)
from trl.data_utils import get_dataset_column_names
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import disable_dropout_in_model, get_config_model_id, global_then_local_main_first

from ..data_utils import DatasetFormatError, is_conversational_prompt, require_columns, require_per_process_batches
from ..generation import prompt_ids_for_generation
from ..logprobs import TokenLogProbsOutput, add_logprob_forward
from ..models import load_model, load_tokenizer, prepare_peft_model, with_device_map
from ..rewards import as_reward_funcs
from .config import DEFAULT_NUM_GENERATIONS, RRHFConfig
from .data import (
    HOW_TO_FORMAT,
    HOW_TO_SAMPLE,
    DataCollatorForRRHF,
    tokenize_row,
    validate_prompt_row,
    validate_row,
    validate_tokenized_row,
)
from .loss import RRHFLossOutput, rrhf_loss
from .online import ROW_INDEX, OnlineRRHFMixin, fixed_completion_ids
from .scoring import add_rewards
from .sharing import check_prompt_sharing, pack_shared_prompts, packing_pays_off


class RRHFTrainer(OnlineRRHFMixin, _BaseTrainer):
    """
    Trainer for RRHF: Rank Responses to align language models with Human Feedback ([Yuan et al.,
    2023](https://huggingface.co/papers/2304.05302)).

    For each prompt, the policy's length-normalized log-probabilities of k ranked completions are aligned with their
    rewards by a zero-margin hinge over ordered pairs, plus the negative log-likelihood of the best completion. Only
    the completion tokens are projected onto the vocabulary: the full `(batch, seq_len, vocab)` log-softmax is never
    built.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_won import RRHFConfig, RRHFTrainer

    >>> dataset = Dataset.from_dict(
    ...     {
    ...         "prompt": ["The sky is"],
    ...         "completions": [[" blue.", " green.", " made of cheese."]],
    ...         "rewards": [[1.0, 0.2, -1.0]],
    ...     }
    ... )
    >>> trainer = RRHFTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", args=RRHFConfig("out"), train_dataset=dataset)
    >>> trainer.train()
    ```

    Args:
        model (`str` or [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            Model to be trained. Either a path or hub id loaded with `AutoModelForCausalLM.from_pretrained` and
            `args.model_init_kwargs` (`dtype` defaults to `float32`), or a causal LM object (optionally PEFT-wrapped).
        args ([`RRHFConfig`], *optional*):
            Configuration for this trainer. If `None`, a default configuration is used.
        data_collator ([`~transformers.DataCollator`], *optional*):
            Function forming a batch from tokenized rows. Defaults to [`DataCollatorForRRHF`].
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Offline: rows `{"prompt", "completions", "rewards"}` in standard (strings) or conversational format
            (the prompt a list of messages, each completion a list of assistant messages). The number of completions
            may differ between rows (at least 2). Without a `rewards` column, `reward_funcs` score the completions
            once before training. Already tokenized rows (`prompt_ids`, `completion_ids`, `rewards`) are used as they
            are. Online (a prompt-only dataset, or `args.num_generations >= 2`): rows `{"prompt"}`, optionally with
            fixed `completions` ranked together with the samples, and any columns the reward functions read; the
            trainer samples `args.num_generations` completions per prompt from the current policy during training
            and `reward_funcs` score every candidate (see `args.num_generations`).
        eval_dataset ([`~datasets.Dataset`], [`~datasets.IterableDataset`] or `dict[str, Dataset]`, *optional*):
            Dataset(s) to evaluate on, in the offline format (with `completions`; nothing is sampled for them).
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Tokenizer. Loaded from the model's path when `None`. A tokenizer without a pad token pads with EOS.
        reward_funcs (callable, `str`, [`~transformers.PreTrainedModel`] or a list of them, *optional*):
            Reward functions with TRL's GRPO signature (`func(prompts, completions, **kwargs) -> list[float]`,
            where kwargs carry the row's other columns) and/or sequence-classification reward models given as
            objects or paths. Their weighted sum (see `args.reward_weights`) is each completion's reward. Offline
            they score a dataset without a `rewards` column once before training. Online they score every candidate
            of every generation round, called exactly as `GRPOTrainer` calls them (keyword arguments `prompts`,
            `completions`, `completion_ids`, the dataset's other columns and `trainer_state`; `None` for "does not
            apply"; async functions run concurrently). Reward models score text as TRL's `RewardTrainer` tokenizes
            its training data (EOS appended to standard text, special tokens added), not as `GRPOTrainer` scores
            standard text (neither), so their rewards can differ slightly from GRPO's.
        reward_processing_classes ([`~transformers.PreTrainedTokenizerBase`] or `list`, *optional*):
            Tokenizers of the reward models in `reward_funcs`, in the same order (`None` loads the model's own).
        callbacks (list of [`~transformers.TrainerCallback`], *optional*):
            Callbacks to customize the training loop.
        optimizers (`tuple[Optimizer | None, LambdaLR | None]`, *optional*, defaults to `(None, None)`):
            The optimizer and scheduler to use.
        optimizer_cls_and_kwargs (`tuple[type[torch.optim.Optimizer], dict[str, Any]]`, *optional*):
            Optimizer class and keyword arguments; overrides `optim` and `optim_args` in `args`.
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            bitsandbytes 4-bit/8-bit quantization applied when `model` is a path. Combine with `peft_config` for QLoRA.
        peft_config ([`~peft.PeftConfig`], *optional*):
            PEFT configuration used to wrap the model. If `None`, the model is not wrapped.
    """

    # `compute_loss` divides by the number of prompts in the whole optimizer step (all micro-batches, all processes)
    loss_is_scaled_for_ga = True

    _tag_names = ["trl", "trl-won", "rrhf"]
    _name = "RRHF"
    _paper = {
        "title": "RRHF: Rank Responses to Align Language Models with Human Feedback",
        "id": "2304.05302",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{yuan2023rrhf,
                title        = {{RRHF: Rank Responses to Align Language Models with Human Feedback}},
                author       = {Zheng Yuan and Hongyi Yuan and Chuanqi Tan and Wei Wang and Songfang Huang and
                                Fei Huang},
                year         = 2023,
                booktitle    = {Advances in Neural Information Processing Systems 36 (NeurIPS 2023)},
                url          = {https://arxiv.org/abs/2304.05302},
            }"""),
    }

    def __init__(
        self,
        model: "str | PreTrainedModel",
        args: RRHFConfig | None = None,
        data_collator: DataCollator | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset | IterableDataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        reward_funcs: Any = None,
        reward_processing_classes: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
        quantization_config=None,
        peft_config=None,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = RRHFConfig(f"{model_name.split('/')[-1]}-RRHF")
        if train_dataset is None:
            raise ValueError("`train_dataset` is required.")
        if not isinstance(train_dataset, (Dataset, IterableDataset)):
            raise TypeError(
                f"`train_dataset` must be a `Dataset` or `IterableDataset`, got `{type(train_dataset).__name__}`."
            )
        # A batch holds `sum(k)` sequences for its prompts: its tensors do not share a first dimension.
        require_per_process_batches(args, "RRHFTrainer", "its batches hold several completions per prompt")

        # Model. PEFT initializes adapter weights randomly, so seed first.
        set_seed(args.seed)
        model_init_kwargs = with_device_map(
            args.model_init_kwargs,
            training=True,
            quantized=quantization_config is not None,
            state=args.distributed_state,
        )
        model_id = model
        model = load_model(
            model,
            AutoModelForCausalLM,
            model_init_kwargs=model_init_kwargs,
            quantization_config=quantization_config,
            trust_remote_code=args.trust_remote_code,
        )
        processing_class = load_tokenizer(model_id, processing_class, trust_remote_code=args.trust_remote_code)
        model.config.get_text_config().pad_token_id = processing_class.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = processing_class.pad_token_id
        model = prepare_peft_model(model, peft_config, args)
        add_logprob_forward(model, chunk_size=args.logprob_chunk_size)
        if args.disable_dropout:
            disable_dropout_in_model(model)

        # Data. Offline, reward models are only needed to score the datasets: they are released right after. Online
        # (a prompt-only dataset, or `num_generations >= 2`), they score every generation round.
        funcs = as_reward_funcs(reward_funcs, reward_processing_classes, batch_size=args.reward_batch_size)
        self.num_generations = self._resolve_num_generations(train_dataset, args, funcs)
        if self.num_generations:
            train_dataset = self._prepare_prompt_dataset(train_dataset, processing_class, args, model)
        else:
            train_dataset = self._prepare_dataset(train_dataset, processing_class, args, "train", funcs)

        # Online, an eval dataset's own `rewards` are used (`reward_funcs` score the samples); offline, as before.
        def eval_funcs(data, funcs=funcs):
            return [] if self.num_generations and "rewards" in get_dataset_column_names(data) else funcs

        if isinstance(eval_dataset, dict):
            eval_dataset = {
                name: self._prepare_dataset(data, processing_class, args, name, eval_funcs(data))
                for name, data in eval_dataset.items()
            }
        elif eval_dataset is not None:
            if not isinstance(eval_dataset, (Dataset, IterableDataset)):
                raise TypeError(
                    "`eval_dataset` must be a `Dataset`, an `IterableDataset` or a dict of them, got "
                    f"`{type(eval_dataset).__name__}`."
                )
            eval_dataset = self._prepare_dataset(
                eval_dataset, processing_class, args, "eval", eval_funcs(eval_dataset)
            )
        self.reward_funcs = funcs if self.num_generations else []
        del funcs
        if data_collator is None:
            data_collator = DataCollatorForRRHF(processing_class.pad_token_id, args.pad_to_multiple_of)

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
        )
        if args.n_gpu > 1:
            raise ValueError(
                "RRHFTrainer does not support `nn.DataParallel`, which `Trainer` uses when several GPUs are visible "
                "to one process. Launch with `accelerate launch` or `torchrun`, or expose one GPU with "
                "`CUDA_VISIBLE_DEVICES`."
            )
        # Evaluation goes through `compute_loss` even though the batches carry no `labels`.
        self.can_return_loss = True
        self.label_names = []
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._total_train_tokens = 0
        self.model.add_model_tags(self._tag_names)
        self._share_prompt = args.share_prompt
        self._warned_unpackable = False
        if self._share_prompt:
            reason = check_prompt_sharing(self.model, processing_class.pad_token_id or 0)
            if reason is not None:
                warnings.warn(
                    f"Prompt sharing is off: {reason}. Each completion goes through the model with its own copy of "
                    "the prompt (same loss, more compute). Set `share_prompt=False` to silence this warning.",
                    stacklevel=2,
                )
                self._share_prompt = False
        self._init_online()

    def _resolve_num_generations(self, dataset, args: RRHFConfig, reward_funcs: list[Callable]) -> int:
        """Samples per prompt: 0 offline; the switch to online RRHF (see `RRHFConfig.num_generations`)."""
        columns = get_dataset_column_names(dataset)
        has_candidates = "completions" in columns or "completion_ids" in columns
        num_generations = args.num_generations
        if num_generations is None:  # online for a prompt-only dataset (a `rewards` column means offline data)
            prompt_only = not has_candidates and "rewards" not in columns
            num_generations = DEFAULT_NUM_GENERATIONS if prompt_only else 0
        if num_generations == 0:
            return 0
        if "prompt" not in columns:
            require_columns(columns, ["prompt"], "train", HOW_TO_SAMPLE)
        what = (
            "is prompt-only (no 'completions' column)"
            if not has_candidates
            else f"is trained online (num_generations={num_generations})"
        )
        if not reward_funcs:
            raise ValueError(
                f"The train dataset {what}, so RRHFTrainer samples {num_generations} completions per prompt from the "
                "policy and needs `reward_funcs` (reward functions and/or reward models) to score them. Pass "
                "`reward_funcs=...`, or give a dataset with 'completions' and 'rewards' columns for offline RRHF "
                "(num_generations=0)."
            )
        if "rewards" in columns:
            raise ValueError(
                f"The train dataset {what} and has a 'rewards' column. Online, `reward_funcs` score every candidate "
                "(the samples and the row's fixed 'completions') so that all are ranked on one scale; given rewards "
                "would be on another. Remove the 'rewards' column, or set num_generations=0 to train offline on the "
                "given rewards alone."
            )
        if "completion_ids" in columns:
            raise ValueError(
                "The train dataset is already tokenized ('completion_ids'): it cannot be sampled for. Give text rows "
                "('prompt', optional 'completions') for online RRHF, or set num_generations=0."
            )
        if args.use_vllm is False and args.max_completion_length is None:
            raise ValueError("`max_completion_length` must be set for online RRHF (the longest sample, in tokens).")
        return num_generations

    def _prepare_prompt_dataset(self, dataset, tokenizer, args: RRHFConfig, model) -> Dataset | IterableDataset:
        """Check every row of an online dataset (errors name the row) and number the rows (`ROW_INDEX`)."""
        if next(iter(dataset), None) is None:
            raise DatasetFormatError(f"The train dataset has no rows. {HOW_TO_SAMPLE}")
        first = next(iter(dataset))
        if is_conversational_prompt(first.get("prompt")) and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "The train dataset is conversational but the tokenizer has no chat template. Use a tokenizer with "
                "a chat template (or set `tokenizer.chat_template`)."
            )
        max_positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)

        def check(example, row):
            validate_prompt_row(
                example,
                row,
                lambda prompt: prompt_ids_for_generation(tokenizer, prompt),
                args.max_length,
                max_positions,
            )
            if example.get("completions"):  # fixed completions must continue the prompt as it is sampled from
                prompt_ids = prompt_ids_for_generation(tokenizer, example["prompt"])
                for completion in example["completions"]:
                    fixed_completion_ids(tokenizer, prompt_ids, example["prompt"], completion, row)
            return {ROW_INDEX: row}

        map_kwargs = {"with_indices": True}
        if isinstance(dataset, Dataset):
            map_kwargs.update(num_proc=args.dataset_num_proc, desc="Checking train prompts")
        with global_then_local_main_first():
            return dataset.map(check, **map_kwargs)

    def _prepare_dataset(
        self,
        dataset: Dataset | IterableDataset,
        tokenizer: PreTrainedTokenizerBase,
        args: RRHFConfig,
        name: str,
        reward_funcs: list[Callable] | None = None,
    ) -> Dataset | IterableDataset:
        if next(iter(dataset), None) is None:
            raise DatasetFormatError(f"The {name} dataset has no rows. {HOW_TO_FORMAT}")
        columns = get_dataset_column_names(dataset)
        if {"prompt_ids", "completion_ids", "rewards"} <= set(columns):  # already tokenized: checked, used as is
            if isinstance(dataset, Dataset):
                for row, example in enumerate(dataset):
                    validate_tokenized_row(example, row)
                return dataset
            return dataset.map(lambda example, row: validate_tokenized_row(example, row) or example, with_indices=True)
        require_columns(columns, ["prompt", "completions"], name, HOW_TO_FORMAT)
        has_rewards = "rewards" in columns
        if has_rewards and reward_funcs:
            raise ValueError(
                f"The {name} dataset already has a 'rewards' column and `reward_funcs` were also given. Remove the "
                "column to score the completions with `reward_funcs`, or drop `reward_funcs` to use the column."
            )
        if not has_rewards:
            if not reward_funcs:
                raise DatasetFormatError(
                    f"The {name} dataset has no 'rewards' column and no `reward_funcs` were given. Add a 'rewards' "
                    "column (one number per completion) or pass `reward_funcs` (reward functions and/or reward "
                    "models) to score the completions before training."
                )
            if isinstance(dataset, IterableDataset):
                raise ValueError(
                    f"The {name} dataset is an IterableDataset without a 'rewards' column: completions can only be "
                    "scored before training for a map-style `Dataset`. Score it first with "
                    "`trl_won.rrhf.add_rewards` or pass a `Dataset`."
                )
            show_progress = not args.disable_tqdm
            dataset = add_rewards(dataset, reward_funcs, args.reward_weights, args.output_dir, show_progress)

        first = next(iter(dataset))
        if is_conversational_prompt(first["prompt"]) and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"The {name} dataset is conversational but the tokenizer has no chat template. Use a tokenizer with "
                "a chat template (or set `tokenizer.chat_template`)."
            )

        def validate_and_tokenize(example, row):
            validate_row(example, row)
            return tokenize_row(example, row, tokenizer, args.max_length, args.max_completions)

        map_kwargs = {"with_indices": True}
        if isinstance(dataset, Dataset):
            map_kwargs.update(num_proc=args.dataset_num_proc, desc=f"Tokenizing {name} dataset")
        with global_then_local_main_first():
            return dataset.map(validate_and_tokenize, **map_kwargs)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "completion_ids", "rewards"]

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # Count the prompts of the whole optimizer step (every micro-batch of every process), so that `compute_loss`
        # can return the exact mean over prompts however they are split into micro-batches and processes.
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        num_prompts = torch.tensor(sum(len(batch["num_completions"]) for batch in batch_samples), device=device)
        if self.accelerator.num_processes > 1:
            num_prompts = self.accelerator.gather(num_prompts).sum()
        return batch_samples, num_prompts

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        num_prompts = inputs["num_completions"].numel()
        if num_prompts == 0:
            # Online: every prompt group of this micro-batch was skipped (no two scored candidates). Other processes
            # may have prompts: this one still runs a forward through `model` (under DDP its backward then joins the
            # gradient all-reduce, which the forward arms) and gathers its (zero) metrics, or the processes would
            # wait on each other forever. Its loss is zero, so the step's gradient is the mean over the other prompts.
            pad_id = self.processing_class.pad_token_id or 0
            device = self.accelerator.device
            outputs = model(
                input_ids=torch.full((1, 2), pad_id, dtype=torch.long, device=device),
                attention_mask=torch.ones(1, 2, dtype=torch.long, device=device),
                logprob_mask=torch.tensor([[0, 1]], device=device),  # one scored token: the LM head is used too
                use_cache=False,
            )
            loss = outputs.token_logps.sum() * 0.0
            self._gather_metrics(mode, torch.zeros(8, device=device))
            return (loss, outputs) if return_outputs else loss
        outputs = self._completion_logps(model, inputs)
        out = rrhf_loss(
            outputs.token_logps,
            inputs["completion_mask"],
            inputs["rewards"],
            inputs["group_ids"],
            num_prompts,
            length_penalty=self.args.length_penalty,
            rrhf_weight=self.args.rrhf_weight,
            sft_weight=self.args.sft_weight,
            sft_loss_type=self.args.sft_loss_type,
        )
        if mode == "train" and num_items_in_batch is not None:
            # Gradients are averaged over processes, hence the factor: the step's gradient is that of the mean loss
            # over all of its prompts.
            loss = out.loss.sum() * self.accelerator.num_processes / num_items_in_batch
        else:
            loss = out.loss.mean()
        self._record_metrics(mode, out, inputs)
        return (loss, outputs) if return_outputs else loss

    def _completion_logps(self, model, inputs: dict[str, torch.Tensor]) -> TokenLogProbsOutput:
        """Per-token log-probs of the batch's rows; each prompt computed once when prompt sharing is on."""
        packed = None
        if self._share_prompt:
            packed = pack_shared_prompts(
                inputs["input_ids"],
                inputs["attention_mask"],
                inputs["completion_mask"],
                inputs["group_ids"],
                self.processing_class.pad_token_id or 0,
            )
            if packed is None and not self._warned_unpackable:
                warnings.warn(
                    "A batch could not be packed for prompt sharing (rows not right-padded, or a prompt group "
                    "without a shared prompt token); such batches run one sequence per completion.",
                    stacklevel=2,
                )
                self._warned_unpackable = True
            elif packed is not None and not packing_pays_off(
                self.model.config, tuple(inputs["input_ids"].shape), tuple(packed.input_ids.shape)
            ):
                packed = None  # short prompts, long completions: one sequence per completion is cheaper
        if packed is not None:
            token_logps = model(**packed.model_inputs(), use_cache=False).token_logps
            return TokenLogProbsOutput(token_logps=packed.unpack(token_logps))
        return model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            logprob_mask=inputs["completion_mask"],
            use_cache=False,
        )

    def _record_metrics(self, mode: str, out: RRHFLossOutput, inputs: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            stats = torch.stack(
                [
                    out.rank_loss.detach().sum(),
                    out.sft_loss.detach().sum(),
                    out.correct_pairs.sum(),
                    out.num_pairs.sum(),
                    out.best_scores.sum(),
                    out.worst_scores.sum(),
                    torch.tensor(float(out.loss.numel()), device=out.loss.device),
                    inputs["completion_mask"].sum().to(out.loss.dtype),
                ]
            ).float()
        self._gather_metrics(mode, stats)

    def _gather_metrics(self, mode: str, stats: torch.Tensor) -> None:
        """Sum a micro-batch's `_record_metrics` stats over the processes (every process calls this, also one whose
        micro-batch was empty, with zeros) and record the means over the prompts."""
        with torch.no_grad():
            stats = self.accelerator.gather(stats).view(-1, stats.numel()).sum(dim=0).tolist()
        rank, sft, correct, pairs, best, worst, prompts, tokens = stats
        metrics = self._metrics[mode]
        if prompts > 0:
            metrics["rank_loss"].append(rank / prompts)
            metrics["sft_loss"].append(sft / prompts)
            metrics["logps/best"].append(best / prompts)
            metrics["logps/worst"].append(worst / prompts)
        if pairs > 0:
            metrics["ranking_accuracy"].append(correct / pairs)
        if mode == "train":
            self._total_train_tokens += int(tokens)
            metrics["num_tokens"] = [self._total_train_tokens]

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {}
        for key, values in self._metrics[mode].items():
            values = [value for value in values if not math.isnan(value)]  # a reward function that never applied
            if values:
                metrics[key] = sum(values) / len(values)
        if mode == "eval":
            metrics = {f"eval_{key}": value for key, value in metrics.items()}
        logs.update(metrics)
        super().log(logs, start_time)
        self._metrics[mode].clear()
        if mode == "train":
            self._log_completions_table()

    def _write_model_card(self):
        model_name = Path(self.args.output_dir).name if self.args.hub_model_id is None else self.args.hub_model_id
        self.create_model_card(model_name=model_name.split("/")[-1])

    def _save_checkpoint(self, model, trial):
        self._write_model_card()
        super()._save_checkpoint(model, trial)
        self._save_generation_buffer(trial)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if not _internal_call:
            self._write_model_card()

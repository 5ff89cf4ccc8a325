"""`RLAIFLabelerCallback`: AI-labeled preferences of the policy's own samples, during training."""

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate.utils import DistributedType, gather_object
from transformers import AutoModelForCausalLM, TrainerCallback

from ..data_utils import Completion, Prompt, as_completion
from ..generation import SamplingParams, sample_completions
from ..models import load_model, with_device_map
from ..utils import atomic_write_text, derived_seed
from .base import PairwiseJudge
from .cached import judge_pairs_cached
from .labeling import preference_columns
from .store import LabelStore


logger = logging.getLogger(__name__)

# Each round's preference data: the step zero-padded so that the files sort by step (documented in docs/rlaif.md).
ROUND_FILE = "round-step{step:07d}.jsonl"


class RLAIFLabelerCallback(TrainerCallback):
    """Label the policy's samples with an AI judge every `label_every` steps (or at each epoch end).

    Each round:

    1. samples completions for a pool of prompts from the model being trained (every process samples its share of
       the prompts; with DeepSpeed ZeRO-3 the parameters are gathered for generation, as TRL does);
    2. pairs them: two policy samples per prompt; or a policy sample against a reference model's completion (sampled
       once, at the first round, and reused); or against given reference completions;
    3. labels the pairs through the judge and the label store (main process only);
    4. writes the round's preference dataset (`prompt`, `chosen`, `rejected`, `soft_label`, ...) as JSON lines to
       `{output_dir}/{output_subdir}/round-step{step:07d}.jsonl` (step zero-padded to 7 digits so that the files sort
       by step, e.g. `round-step0000100.jsonl`), ready for an iterative DPO or reward-model round;
    5. logs `rlaif/label_count`, `rlaif/position_consistency`, `rlaif/mean_confidence`, with a reference also
       `rlaif/win_rate` (mean probability that the policy is preferred) and `rlaif/win_rate_hard`, and
       `rlaif/failures`, through the trainer's loggers (`report_to`).

    A round that fails (on any process) is logged with its traceback and counted in `rlaif/failures`; training goes on.
    Only the main process loads the judge (pass it as a path to a [`TransformersJudge`]) and opens the store; the
    other processes only sample their share. While the main process judges, the others wait at the next gradient
    synchronization: keep rounds short enough for the distributed timeout (`ddp_timeout`, 30 minutes by default).

    Example:

    ```python
    trainer = DPOTrainer(model=..., args=DPOConfig(...), train_dataset=...)
    judge = TransformersJudge("Qwen/Qwen2.5-1.5B-Instruct", use_chat_template=True)
    trainer.add_callback(RLAIFLabelerCallback(judge, trainer, prompts=eval_prompts, label_every=100))
    ```

    Args:
        judge ([`PairwiseJudge`]):
            The judge.
        trainer ([`~transformers.Trainer`]):
            The trainer the callback is attached to (its model, tokenizer, accelerator and loggers are used).
        prompts (`Sequence[str | list[dict]]` or [`~datasets.Dataset`], *optional*):
            Prompt pool, or a dataset with a `prompt` column. Defaults to the trainer's evaluation dataset's prompts.
        store ([`LabelStore`], *optional*):
            Label store; defaults to `{output_dir}/{output_subdir}/labels.sqlite`.
        label_every (`int`, *optional*):
            Label every this many optimizer steps; `None` labels at the end of each epoch.
        label_at_start (`bool`, *optional*, defaults to `False`):
            Also label once before training (a baseline for the win rate).
        reference_model (`str` or [`~transformers.PreTrainedModel`], *optional*):
            A model whose completions the policy is compared with (sampled once; loaded from a path when needed).
        reference_completions (`Sequence[str | list[dict]]`, *optional*):
            Reference completions, one per prompt, to compare the policy with.
        num_prompts (`int`, *optional*):
            Use only the first `num_prompts` prompts of the pool (the same ones every round, so that win rates are
            comparable across rounds).
        sampling_params ([`SamplingParams`], *optional*):
            How to sample the policy (and the reference model).
        generation_batch_size (`int`, *optional*, defaults to `32`):
            Sequences per `generate` call.
        seed (`int`, *optional*, defaults to `0`):
            Sampling seed (combined with the step and process index; training's RNG is untouched).
        output_subdir (`str`, *optional*, defaults to `"rlaif"`):
            Folder under the trainer's `output_dir` for the rounds and the default store.
        chunk_size (`int`, *optional*, defaults to `64`):
            Pairs per judge call and per store transaction.
        max_consecutive_failures (`int`, *optional*):
            Raise after this many failed rounds in a row; `None` never raises.
    """

    def __init__(
        self,
        judge: PairwiseJudge,
        trainer,
        prompts: "Sequence[Prompt] | Any | None" = None,
        *,
        store: LabelStore | None = None,
        label_every: int | None = None,
        label_at_start: bool = False,
        reference_model=None,
        reference_completions: Sequence[Completion] | None = None,
        num_prompts: int | None = None,
        sampling_params: SamplingParams | None = None,
        generation_batch_size: int = 32,
        seed: int = 0,
        output_subdir: str = "rlaif",
        chunk_size: int = 64,
        max_consecutive_failures: int | None = None,
    ):
        if not isinstance(judge, PairwiseJudge):
            raise TypeError(f"`judge` must be a pairwise judge, got {type(judge).__name__}.")
        if label_every is not None and label_every < 1:
            raise ValueError(f"`label_every` must be >= 1 or None (label at epoch ends), got {label_every}.")
        if reference_model is not None and reference_completions is not None:
            raise ValueError("Give either `reference_model` or `reference_completions`, not both.")
        self.judge = judge
        self.trainer = trainer
        self.prompts = self._prompt_pool(prompts, trainer, num_prompts)
        if reference_completions is not None:
            reference_completions = list(reference_completions)[: len(self.prompts)]
            if len(reference_completions) != len(self.prompts):
                raise ValueError(
                    f"`reference_completions` has {len(reference_completions)} entries for {len(self.prompts)} "
                    "prompts; give one reference completion per prompt."
                )
        self.reference_completions = reference_completions
        self.reference_model = reference_model
        if reference_completions is not None:
            self.mode = "reference_completions"
        elif reference_model is not None:
            self.mode = "reference_model"
        else:
            self.mode = "samples"
        self._reference_cache: dict[int, str] = {}
        self._store = store
        self.label_every = label_every
        self.label_at_start = label_at_start
        self.sampling_params = sampling_params or SamplingParams()
        self.generation_batch_size = generation_batch_size
        self.seed = seed
        self.output_subdir = output_subdir
        self.chunk_size = chunk_size
        self.max_consecutive_failures = max_consecutive_failures
        self.failures = 0
        self.consecutive_failures = 0
        self.rounds = 0
        self._last_step = -1

    @staticmethod
    def _prompt_pool(prompts, trainer, num_prompts) -> list[Prompt]:
        if prompts is None:
            dataset = getattr(trainer, "eval_dataset", None)
            if dataset is None or "prompt" not in getattr(dataset, "column_names", []):
                raise ValueError(
                    "RLAIFLabelerCallback needs prompts: pass `prompts=` (a list or a dataset with a 'prompt' "
                    "column), or give the trainer an evaluation dataset with a 'prompt' column."
                )
            prompts = dataset
        if hasattr(prompts, "column_names"):
            if "prompt" not in prompts.column_names:
                raise ValueError(f"The prompt dataset has no 'prompt' column (it has {prompts.column_names}).")
            prompts = prompts["prompt"]
        prompts = list(prompts)
        if num_prompts is not None:
            prompts = prompts[:num_prompts]
        if not prompts:
            raise ValueError("The prompt pool of RLAIFLabelerCallback is empty.")
        return prompts

    # ----------------------------------------------------------------------------------------------------- events

    def on_train_begin(self, args, state, control, **kwargs):
        if self.label_at_start and state.global_step == 0:
            self._maybe_round(args, state, control)

    def on_step_end(self, args, state, control, **kwargs):
        if self.label_every is not None and state.global_step % self.label_every == 0:
            self._maybe_round(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.label_every is None:
            self._maybe_round(args, state, control)

    def _maybe_round(self, args, state, control) -> None:
        if state.global_step == self._last_step:  # never twice at the same step (e.g. epoch end after a step)
            return
        self._last_step = state.global_step
        started = time.perf_counter()
        metrics = self.label_round(args, state)
        if metrics is None:  # a non-main process
            return
        metrics["rlaif/round_seconds"] = time.perf_counter() - started
        self._log(args, state, control, metrics)
        if self.max_consecutive_failures is not None and self.consecutive_failures >= self.max_consecutive_failures:
            raise RuntimeError(
                f"RLAIFLabelerCallback: {self.consecutive_failures} labeling rounds failed in a row (see the logged "
                "tracebacks)."
            )

    # ------------------------------------------------------------------------------------------------------ round

    @property
    def tokenizer(self):
        processing_class = self.trainer.processing_class
        return getattr(processing_class, "tokenizer", processing_class)

    def store(self, args) -> LabelStore:
        if self._store is None:
            self._store = LabelStore(Path(args.output_dir) / self.output_subdir / "labels.sqlite")
        return self._store

    def _sample_share(self, indices: list[int], step: int) -> dict[str, Any]:
        """Sample this process's share of the prompts (and, the first time, its reference completions)."""
        from trl.models.utils import unwrap_model_for_generation

        accelerator = self.trainer.accelerator
        prompts = [self.prompts[i] for i in indices]
        seed = derived_seed(self.seed, step, accelerator.process_index)
        num_samples = 2 if self.mode == "samples" else 1
        share: dict[str, Any] = {"indices": indices, "policy": [], "reference": None}
        if not prompts:
            return share
        gradient_checkpointing_kwargs = getattr(self.trainer.args, "gradient_checkpointing_kwargs", None)
        # FSDP gathers each layer's parameters in its forward pass, a collective: every process must keep calling
        # the model until all have finished generating.
        generate_kwargs = {"synced_gpus": True} if accelerator.distributed_type == DistributedType.FSDP else None
        with unwrap_model_for_generation(
            self.trainer.model_wrapped, accelerator, gradient_checkpointing_kwargs=gradient_checkpointing_kwargs
        ) as model:
            samples = sample_completions(
                model,
                self.tokenizer,
                prompts,
                num_samples,
                self.sampling_params,
                self.generation_batch_size,
                seed,
                generate_kwargs=generate_kwargs,
            )
        share["policy"] = [[s.text for s in group] for group in samples]
        if self.mode == "reference_model":
            missing = [i for i in indices if i not in self._reference_cache]
            if missing:
                reference = self.reference_model
                if isinstance(reference, str):  # loaded for this once only, then freed
                    reference = load_model(
                        reference,
                        AutoModelForCausalLM,
                        model_init_kwargs=with_device_map({"dtype": "auto"}),
                        argument_name="reference_model",
                    ).to(accelerator.device)
                samples = sample_completions(
                    reference,
                    self.tokenizer,
                    [self.prompts[i] for i in missing],
                    1,
                    self.sampling_params,
                    self.generation_batch_size,
                    self.seed + accelerator.process_index,
                )
                self._reference_cache.update((i, group[0].text) for i, group in zip(missing, samples, strict=True))
            share["reference"] = [self._reference_cache[i] for i in indices]
        return share

    def label_round(self, args, state) -> dict[str, float] | None:
        """Run one round; return its metrics on the main process, `None` on the others."""
        accelerator = self.trainer.accelerator
        share, error = None, None
        try:
            # Padded so that every process runs the same number of `generate` calls (the last prompt repeats).
            with accelerator.split_between_processes(list(range(len(self.prompts))), apply_padding=True) as indices:
                share = self._sample_share(list(indices), state.global_step)
        except Exception as exc:  # reported by every process through the gather below, so none waits forever
            logger.exception("RLAIFLabelerCallback: sampling failed on process %d.", accelerator.process_index)
            error = f"process {accelerator.process_index}: {type(exc).__name__}: {exc}"
        shares = gather_object([{"share": share, "error": error}])
        if not accelerator.is_main_process:
            return None
        self.rounds += 1
        try:
            errors = [s["error"] for s in shares if s["error"]]
            if errors:
                raise RuntimeError("sampling failed: " + "; ".join(errors))
            metrics = self._label(args, state, [s["share"] for s in shares])
            self.consecutive_failures = 0
        except Exception:
            logger.exception("RLAIFLabelerCallback: labeling round at step %d failed.", state.global_step)
            self.failures += 1
            self.consecutive_failures += 1
            metrics = {}
        metrics["rlaif/failures"] = float(self.failures)
        return metrics

    def _label(self, args, state, shares: list[dict]) -> dict[str, float]:
        policy: dict[int, list[str]] = {}
        reference: dict[int, str] = {}
        for share in shares:  # a prompt repeated to pad a process's share is labeled once
            policy.update(zip(share["indices"], share["policy"], strict=True))
            if share["reference"] is not None:
                reference.update(zip(share["indices"], share["reference"], strict=True))
        indices = sorted(policy)
        prompts = [self.prompts[i] for i in indices]
        a = [as_completion(p, policy[i][0]) for p, i in zip(prompts, indices, strict=True)]
        if self.mode == "reference_completions":
            b = [self.reference_completions[i] for i in indices]
        elif self.mode == "reference_model":
            b = [as_completion(p, reference[i]) for p, i in zip(prompts, indices, strict=True)]
        else:
            b = [as_completion(p, policy[i][1]) for p, i in zip(prompts, indices, strict=True)]
        has_reference = self.mode != "samples"
        judgements = judge_pairs_cached(self.judge, prompts, a, b, self.store(args), self.chunk_size)

        extra = {"step": [state.global_step] * len(prompts)}
        if has_reference:
            extra["policy_is_chosen"] = [j.probability is not None and j.probability >= 0.5 for j in judgements]
        columns, dropped = preference_columns(prompts, a, b, judgements, extra=extra)
        self._write_round(args, state.global_step, columns)

        judged = [j for j in judgements if j.probability is not None]
        consistent = [j.position_consistent for j in judged if j.position_consistent is not None]
        metrics = {
            "rlaif/label_count": float(len(judged)),
            "rlaif/unjudged": float(len(judgements) - len(judged)),
            "rlaif/position_consistency": _mean([1.0 if c else 0.0 for c in consistent]),
            "rlaif/mean_confidence": _mean([j.confidence for j in judged]),
        }
        if has_reference:
            metrics["rlaif/win_rate"] = _mean([j.probability for j in judged])
            metrics["rlaif/win_rate_hard"] = _mean(
                [1.0 if j.probability > 0.5 else 0.5 if j.probability == 0.5 else 0.0 for j in judged]
            )
        if dropped:
            unjudged = sum(dropped.values())
            logger.warning("RLAIFLabelerCallback: %d pairs not judged at step %d.", unjudged, state.global_step)
        return metrics

    def _write_round(self, args, step: int, columns: dict[str, list]) -> None:
        folder = Path(args.output_dir) / self.output_subdir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / ROUND_FILE.format(step=step)
        names = list(columns)
        lines = (
            json.dumps(dict(zip(names, values, strict=True)), ensure_ascii=False) + "\n"
            for values in zip(*(columns[n] for n in names), strict=True)
        )
        atomic_write_text(path, "".join(lines))  # a reader never sees half a round

    def _log(self, args, state, control, metrics: dict[str, float]) -> None:
        metrics = {k: v for k, v in metrics.items() if v is not None and not math.isnan(v)}
        logger.info("RLAIF round at step %d: %s", state.global_step, metrics)
        logs = dict(metrics)
        if state.epoch is not None:
            logs["epoch"] = state.epoch
        state.log_history.append({**logs, "step": state.global_step})
        # Straight to the loggers (report_to), bypassing `trainer.log`, which TRL trainers use to flush their own
        # running metrics; keep the trainer's pending log request, which `on_log` clears.
        should_log = control.should_log
        self.trainer.callback_handler.on_log(args, state, control, logs)
        control.should_log = should_log


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None

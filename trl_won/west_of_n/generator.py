"""Offline West-of-N: turn a prompt dataset into a TRL preference dataset, resumably and across processes."""

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from tqdm.auto import tqdm

from ..data_utils import is_conversational_prompt, require_columns, row_error
from ..identity import json_sha256
from ..utils import derived_seed
from .config import WestOfNConfig
from .pipeline import build_pipeline, describe_policy, process_state
from .storage import (
    DATASET,
    FORMAT_VERSION,
    append_results,
    check_or_write_manifest,
    done_chunks,
    filter_results,
    read_results,
    repair_shard,
    results_to_dataset,
    shard_path,
    write_summary,
)


logger = logging.getLogger(__name__)


def validate_prompts(prompts: Sequence) -> None:
    """Every prompt is a string with some non-blank text, or a non-empty list of `{"role", "content"}` messages, all
    in the same format; otherwise a [`DatasetFormatError`] names the row and the fix."""
    if len(prompts) == 0:
        raise ValueError("The prompt dataset is empty.")
    conversational = is_conversational_prompt(prompts[0])
    for i, prompt in enumerate(prompts):
        if is_conversational_prompt(prompt) != conversational:
            raise row_error(
                i,
                "prompt",
                f"is {'standard' if conversational else 'conversational'} but row 0 is "
                f"{'conversational' if conversational else 'standard'}.",
                "Use one format (plain strings, or lists of {'role', 'content'} messages) for every prompt.",
            )
        if conversational:
            _validate_messages(i, prompt)
        elif not isinstance(prompt, str) or not prompt.strip():
            what = "a blank string" if isinstance(prompt, str) else f"{type(prompt).__name__} {_short(prompt)}"
            raise row_error(
                i,
                "prompt",
                f"expected a string with some text or a list of {{'role', 'content'}} messages, got {what}.",
                "Fix or drop the row (e.g. `dataset.filter(lambda row: row['prompt'].strip() != '')`).",
            )


def _validate_messages(row: int, messages: list) -> None:
    for k, message in enumerate(messages):
        where = f"prompt[{k}]"
        if not isinstance(message, dict):
            raise row_error(
                row, where, f"expected a {{'role', 'content'}} message, got {_short(message)}.", "Fix the message."
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise row_error(row, where, f"has no role (got {role!r}).", "Give every message a 'role' string.")
        if not isinstance(content, (str, list)):
            raise row_error(
                row,
                where,
                f"expected a string 'content', got {_short(content)}.",
                "Give every message a 'content' string (use '' for an empty turn).",
            )
    if not any(isinstance(m["content"], list) or m["content"].strip() for m in messages):
        raise row_error(
            row, "prompt", "every message is blank, so there is nothing to answer.", "Fix or drop the row."
        )


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_prompt_lengths(prompt_lengths: Sequence[int], max_new_tokens: int, context: int | None) -> None:
    """Refuse prompts that fill the policy's context; warn about those that leave less than `max_new_tokens` of it.

    Args:
        prompt_lengths (`Sequence[int]`): Tokens of each prompt, as fed to the policy.
        max_new_tokens (`int`): Tokens per response.
        context (`int` or `None`): The policy's context length (`None`: unknown, nothing is checked).
    """
    if context is None:
        return
    too_long = [i for i, n in enumerate(prompt_lengths) if n >= context]
    if too_long:
        i = too_long[0]
        raise row_error(
            i,
            "prompt",
            f"is {prompt_lengths[i]} tokens long, which fills the policy's context of {context} tokens "
            f"({len(too_long)} prompts do; rows {too_long[:10]}).",
            "Shorten or drop those prompts (filter the dataset on their token count).",
        )
    cut = [i for i, n in enumerate(prompt_lengths) if n + max_new_tokens > context]
    if cut:
        logger.warning(
            "%d prompts (rows %s) plus max_new_tokens=%d exceed the policy's context of %d tokens: their responses "
            "run past the positions the policy was trained on. Lower `max_new_tokens`, or shorten or drop those "
            "prompts.",
            len(cut),
            cut[:10],
            max_new_tokens,
            context,
        )


class WestOfNGenerator:
    r"""
    Generate West-of-N preference pairs offline: for every prompt, sample `n` responses from the policy, let the base
    preference model pick the best (`chosen`) and the worst (`rejected`), and filter.

    Results are written to `args.pairs_dir` as they are made, one group of prompts at a time; if the run stops,
    rerunning it with the same arguments resumes without regenerating the prompts already done, and gives the same
    dataset as an uninterrupted run. Under `accelerate launch`, groups of prompts are dealt to the processes in turn,
    each writes its own shard, and every process returns the same gathered dataset (`pairs_dir` must be visible to all
    processes).

    Example:

    ```python
    >>> from trl_won import WestOfNConfig, WestOfNGenerator

    >>> generator = WestOfNGenerator(
    ...     "Qwen/Qwen2.5-0.5B-Instruct",
    ...     WestOfNConfig(n=8, pairs_dir="won_pairs", confidence_quantile=0.5),
    ...     reward_model="my-org/my-base-reward-model",
    ... )
    >>> pairs = generator.generate(prompt_dataset)  # columns prompt, chosen, rejected, chosen_score, ...
    ```

    Args:
        policy (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            The causal LM to sample from, or its path/hub id (loaded with `AutoModelForCausalLM` and
            `args.policy_init_kwargs`, and quantized with `quantization_config`).
        args ([`WestOfNConfig`], *optional*):
            Settings; defaults to `WestOfNConfig()`.
        reward_model (`str` or [`~transformers.PreTrainedModel`], *optional*):
            Base preference model: a sequence-classification reward model with `num_labels=1`, or its path.
        reward_funcs (`Callable` or `list[Callable]`, *optional*):
            Base preference model: reward function(s) `f(prompts, completions, **kwargs) -> list[float]` (TRL GRPO
            signature), summed with `args.reward_weights`.
        judge (`Callable`, *optional*):
            Base preference model: a pairwise judge `judge(prompts, completions_a, completions_b) -> list[float |
            None]` returning P(a preferred over b), or `None` to abstain. Best and worst are then found by knockout
            tournaments (see [`~trl_won.west_of_n.preference`] for the cost).
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The policy's tokenizer; loaded from the policy's path when omitted.
        reward_processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The reward model's tokenizer; loaded from its path when omitted.
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization of the policy when it is loaded from a path.
        reward_quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization of the reward model when it is loaded from a path.

    Exactly one of `reward_model`, `reward_funcs` and `judge` must be given.
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
        if args is not None and not isinstance(args, WestOfNConfig):
            raise TypeError(
                f"`args` must be a `WestOfNConfig`, got {type(args).__name__}. Build one with "
                "`WestOfNConfig(n=..., pairs_dir=...)`."
            )
        self.args = args = args if args is not None else WestOfNConfig()
        if args.keep_candidates and judge is not None:
            raise ValueError(
                "`keep_candidates=True` outputs each response's reward (the RRHF format), but a pairwise judge gives "
                "no per-response reward. Use `reward_model=` or `reward_funcs=`, or set `keep_candidates=False`."
            )
        self.state = process_state()
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
            share_prompt=args.share_prompt_prefill,
        )
        self.preference, self.sampler = self.pipeline.preference, self.pipeline.sampler
        self._policy_name = describe_policy(policy)
        self.summary: dict | None = None

    def manifest(self, prompts: Sequence) -> dict:
        """What the saved results depend on; a rerun resumes only if this matches."""
        a = self.args
        return {
            "format_version": FORMAT_VERSION,
            "policy": self._policy_name,
            "preference_model": self.preference.describe(),
            "n": a.n,
            "temperature": a.temperature,
            "top_p": a.top_p,
            "top_k": a.top_k,
            "max_new_tokens": a.max_new_tokens,
            "strategy": a.strategy,
            "sampling_seed": a.sampling_seed,
            "prompts_per_chunk": a.prompts_per_chunk,
            "chat_template_kwargs": a.chat_template_kwargs,
            "backend": "vllm" if a.use_vllm else "transformers",
            "num_prompts": len(prompts),
            "prompts_sha256": json_sha256(*prompts, terminator="\n"),
        }

    def generate(self, dataset: Dataset | IterableDataset | Sequence) -> Dataset:
        """Generate (or resume generating) the pairs of `dataset`'s prompts and return the filtered dataset.

        Args:
            dataset ([`~datasets.Dataset`], [`~datasets.IterableDataset`] or a list of prompts):
                Prompts in a `prompt` column, standard (strings) or conversational (lists of messages). Other columns
                are ignored.

        Returns:
            [`~datasets.Dataset`]: The preference dataset, the same on every process. It is also saved to
            `pairs_dir/dataset`, with counts in `pairs_dir/summary.json`.
        """
        prompts = self._prompts(dataset)
        self._check_prompt_lengths(prompts)
        args, state = self.args, self.state
        pairs_dir = Path(args.pairs_dir)
        manifest = self.manifest(prompts)
        resumed = check_or_write_manifest(pairs_dir, manifest, write=state.is_main_process)
        state.wait_for_everyone()
        if not state.is_main_process:
            check_or_write_manifest(pairs_dir, manifest, write=False)

        per_chunk = args.prompts_per_chunk
        num_chunks = -(-len(prompts) // per_chunk)
        done = done_chunks(read_results(pairs_dir), len(prompts), per_chunk)
        mine = [c for c in range(num_chunks) if c % state.num_processes == state.process_index and c not in done]
        if resumed and state.is_main_process:
            logger.info("Resuming in %s: %d of %d groups of prompts already done.", pairs_dir, len(done), num_chunks)
        own_shard = shard_path(pairs_dir, state.process_index)
        repair_shard(own_shard)
        desc = "West-of-N" if state.num_processes == 1 else f"West-of-N (process 0 of {state.num_processes})"
        todo = sum(min(per_chunk, len(prompts) - c * per_chunk) for c in mine)
        show = args.show_progress and state.is_main_process
        with tqdm(total=todo, desc=desc, unit="prompt", disable=not show) as progress:  # closed on errors too
            for chunk in mine:
                indices = list(range(chunk * per_chunk, min((chunk + 1) * per_chunk, len(prompts))))
                seed = derived_seed(args.sampling_seed, chunk)
                results = self.pipeline([prompts[i] for i in indices], indices, seed)
                for result in results:
                    result.chunk = chunk
                append_results(own_shard, results)
                progress.update(len(indices))
                progress.set_postfix(pairs=sum(r.is_pair for r in results))
        state.wait_for_everyone()

        saved = read_results(pairs_dir)
        missing = [i for i in range(len(prompts)) if i not in saved]
        if missing:
            raise RuntimeError(
                f"{len(missing)} prompts have no saved result in {pairs_dir} (first: {missing[:5]}). With several "
                "processes, `pairs_dir` must be on a file system that every process sees."
            )
        kept, self.summary = filter_results([saved[i] for i in range(len(prompts))], args)
        pairs = results_to_dataset(kept, args.keep_candidates)
        if state.is_main_process:
            write_summary(pairs_dir, self.summary)
            pairs.save_to_disk(str(pairs_dir / DATASET))
            logger.info("West-of-N: %s", json.dumps(self.summary))
        state.wait_for_everyone()
        return pairs

    @staticmethod
    def _prompts(dataset) -> list:
        if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
            raise TypeError(
                f"`dataset` is a {type(dataset).__name__} with splits {list(dataset)}; pass one split, e.g. "
                f"`generate(dataset[{next(iter(dataset), 'train')!r}])`."
            )
        if not isinstance(dataset, (Dataset, IterableDataset)) and (
            isinstance(dataset, (str, bytes, dict)) or not isinstance(dataset, Iterable)
        ):
            raise TypeError(
                "`dataset` must be a `datasets.Dataset` or `IterableDataset` with a `prompt` column, or a list of "
                f"prompts, got {type(dataset).__name__}. For a dict of columns use `Dataset.from_dict(...)`; for "
                "one prompt, a list with one element."
            )
        if isinstance(dataset, (Dataset, IterableDataset)):
            columns = dataset.column_names
            if columns is None:
                first = next(iter(dataset), None)
                if first is None:
                    raise ValueError("The prompt dataset is empty.")
                columns = list(first.keys())
            require_columns(
                columns,
                ["prompt"],
                "prompt",
                "West-of-N samples responses to the `prompt` column; rename your prompt column with "
                "`dataset.rename_column(old, 'prompt')`.",
            )
            prompts = list(dataset["prompt"]) if isinstance(dataset, Dataset) else [row["prompt"] for row in dataset]
        else:
            prompts = list(dataset)
        validate_prompts(prompts)
        return prompts

    def _check_prompt_lengths(self, prompts: Sequence) -> None:
        context_length = getattr(self.sampler, "context_length", None)
        if context_length is None:  # vLLM checks the lengths itself
            return
        lengths = [len(self.sampler.prompt_ids(p)) for p in prompts]
        check_prompt_lengths(lengths, self.args.max_new_tokens, context_length())

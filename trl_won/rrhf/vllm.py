"""Online RRHF's vLLM backend: TRL's own `VLLMGeneration`, as `GRPOTrainer` uses it.

[`VLLMSampler`] is built once by the [`RRHFTrainer`] when `use_vllm=True`. It hands the generation to
`trl.generation.vllm_generation.VLLMGeneration` (colocated `vllm.LLM` or a `vllm serve` server reached through TRL's
`VLLMClient`), built from the config exactly as `GRPOTrainer` builds it, so a GRPO config's vLLM block means the same
here; and it pushes the policy's weights to vLLM (LoRA adapters merged, as TRL does) once per optimizer step, before
the first generation after the weights changed. What comes back is converted into the samples the `transformers`
sampler ([`~trl_won.generation.sample_completions`]) returns: the prompt is rendered and tokenized the same way, and a
completion is cut after its first EOS (the same EOS set, plus the chat template's end-of-turn token for
conversational prompts, which vLLM is also told to stop at).

`VLLMGeneration` is internal to TRL: the trl range it was tested with is pinned in `pyproject.toml`, and
`tests/test_rrhf_vllm.py` checks the names this module passes against its signatures.

Seeds: as in `GRPOTrainer`, vLLM draws from its own engine's generator (seeded by TRL with the process index in
colocate mode, by the server's `--seed` in server mode), not from the per-cycle seed the `transformers` sampler uses.
A `seed` in `generation_kwargs` is refused in colocate mode: TRL sends each prompt `num_generations` times with one
sampling setting, so one seed would make all of a prompt's samples identical.
"""

from collections.abc import Sequence
from typing import Any

from trl.generation.vllm_generation import VLLMGeneration

from ..data_utils import (
    Prompt,
    chat_turn_end_token_ids,
    decode_continuation,
    is_conversational_prompt,
)
from ..generation import Sample, _eos_token_ids, _trim, prompt_ids_for_generation


def vllm_generation_kwargs(args, num_generations: int | None = None) -> dict[str, Any]:
    """The keyword arguments of `VLLMGeneration` for an [`RRHFConfig`], mapped as `GRPOTrainer` maps a `GRPOConfig`.

    `max_num_seqs` (colocate mode) is the number of sequences one generation cycle sends on a process: the prompts
    of `steps_per_generation` micro-batches times `num_generations` (GRPO counts its batches in completions; RRHF
    counts them in prompts).
    """
    num_generations = args.num_generations if num_generations is None else num_generations
    return {
        "mode": args.vllm_mode,
        "structured_outputs_regex": args.vllm_structured_outputs_regex,
        "server_base_url": args.vllm_server_base_url,
        "server_host": args.vllm_server_host,
        "server_port": args.vllm_server_port,
        "group_port": args.vllm_group_port,
        "server_timeout": args.vllm_server_timeout,
        "tensor_parallel_size": args.vllm_tensor_parallel_size,
        "gpu_memory_utilization": args.vllm_gpu_memory_utilization,
        "max_model_length": args.vllm_max_model_length,
        "max_num_seqs": args.per_device_train_batch_size
        * num_generations
        * args.vllm_tensor_parallel_size
        * args.steps_per_generation,
        "enable_sleep_mode": args.vllm_enable_sleep_mode,
        "model_impl": args.vllm_model_impl,
        "trust_remote_code": args.trust_remote_code,
        "repetition_penalty": args.repetition_penalty,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p,
        "max_completion_length": args.max_completion_length,
        "logprobs": 0,  # the sampled tokens' log-probs, as GRPO asks (RRHF does not use them)
        "generation_kwargs": dict(args.generation_kwargs or {}),
    }


class VLLMSampler:
    """Sample `num_generations` completions per prompt with vLLM, for the trainer's current weights.

    Args:
        trainer ([`RRHFTrainer`]):
            The trainer, after `Trainer.__init__` (its `model`, `accelerator`, `processing_class`, `args` and `state`
            are used). `trainer.model` is the policy whose weights are pushed to vLLM (PEFT adapters merged on the
            way, as TRL does).
    """

    def __init__(self, trainer):
        args = trainer.args
        generation_kwargs = args.generation_kwargs or {}
        if args.vllm_mode == "colocate" and generation_kwargs.get("seed") is not None:
            raise ValueError(
                "`generation_kwargs` sets `seed`, which with `vllm_mode='colocate'` would give every prompt "
                f"{args.num_generations} identical samples (TRL sends each prompt `num_generations` times with one "
                "sampling setting). Remove `seed` from `generation_kwargs`: vLLM's engine is seeded by TRL."
            )
        self.trainer = trainer
        self.tokenizer = trainer.processing_class
        self.chat_template_kwargs = dict(getattr(args, "chat_template_kwargs", None) or {})
        self.generation = VLLMGeneration(
            model=trainer.model,
            accelerator=trainer.accelerator,
            processing_class=self.tokenizer,
            **vllm_generation_kwargs(args),
        )
        self._generation_kwargs = dict(self.generation.generation_kwargs)
        self._eos_ids = _eos_token_ids(trainer.model, self.tokenizer)
        self._turn_end_ids = chat_turn_end_token_ids(self.tokenizer, **self.chat_template_kwargs)
        self.synced_step: int | None = None  # the `global_step` whose weights vLLM holds; `None`: never synced

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The token ids the `transformers` sampler feeds to `generate` for `prompt` (without padding)."""
        return prompt_ids_for_generation(self.tokenizer, prompt, **self.chat_template_kwargs)

    def sync_weights(self) -> None:
        """Push the policy's weights to vLLM if an optimizer step changed them since the last push."""
        step = self.trainer.state.global_step
        if self.synced_step != step:
            self.generation.sync_weights()
            self.synced_step = step

    def sample(self, prompts: Sequence[Prompt], num_generations: int, seed: int | None = None) -> list[list[Sample]]:
        """`num_generations` samples for each prompt, from the current weights.

        Args:
            prompts (`Sequence[str | list[dict]]`):
                This process's prompts, standard or conversational.
            num_generations (`int`):
                Samples per prompt.
            seed (`int`, *optional*):
                Not used: vLLM draws from its engine's own generator (see the module's docstring). Accepted so that
                both samplers are called alike.

        Returns:
            `list[list[Sample]]`: For each prompt, its samples, in the order vLLM returned them.
        """
        del seed
        if num_generations < 1:
            raise ValueError(f"`num_generations` must be >= 1, got {num_generations}.")
        conversational = any(is_conversational_prompt(p) for p in prompts)
        eos_ids = self._eos_ids | self._turn_end_ids if conversational else self._eos_ids
        stop_ids = set(self._generation_kwargs.get("stop_token_ids") or []) | eos_ids
        self.generation.generation_kwargs = {**self._generation_kwargs, "stop_token_ids": sorted(stop_ids)}
        prompt_ids = [self.prompt_ids(p) for p in prompts]
        self.sync_weights()
        # TRL's calling convention: each prompt repeated `num_generations` times, in order.
        repeated = [ids for ids in prompt_ids for _ in range(num_generations)]
        output = self.generation.generate(prompts=repeated, images=None, num_generations=num_generations)
        completion_ids = output[1]  # (prompt_ids, completion_ids, logprobs, logprob_token_ids)
        if len(completion_ids) != len(repeated):
            raise RuntimeError(
                f"vLLM returned {len(completion_ids)} completions for {len(prompts)} prompts x {num_generations} "
                f"generations ({len(repeated)} expected)."
            )
        results = []
        for i, ids in enumerate(prompt_ids):
            samples = []
            for row in completion_ids[i * num_generations : (i + 1) * num_generations]:
                trimmed, finished = _trim(list(row), eos_ids, None)  # vLLM does not pad
                text = decode_continuation(self.tokenizer, ids, trimmed)
                samples.append(Sample(text=text, token_ids=trimmed, finished=finished))
            results.append(samples)
        return results

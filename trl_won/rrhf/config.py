from dataclasses import dataclass, field
from typing import Any

from transformers.utils import is_torch_bf16_gpu_available
from trl.trainer.base_config import _BaseConfig

from ..utils import CheckpointingOnByDefault


DEFAULT_NUM_GENERATIONS = 8  # GRPO's default, used for a prompt-only dataset when `num_generations` is unset


@dataclass
class RRHFConfig(CheckpointingOnByDefault, _BaseConfig):
    r"""
    Configuration class for the [`RRHFTrainer`].

    This class includes only the parameters that are specific to RRHF training. For a full list of training arguments,
    please refer to the [`~transformers.TrainingArguments`] documentation. Note that default values in this class may
    differ from those in [`~transformers.TrainingArguments`].

    Using [`~transformers.HfArgumentParser`] we can turn this class into
    [argparse](https://docs.python.org/3/library/argparse#module-argparse) arguments that can be specified on the
    command line.

    Parameters:
        model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for [`~transformers.AutoModelForCausalLM.from_pretrained`], used when the `model`
            argument of the [`RRHFTrainer`] is provided as a string. `dtype` defaults to `float32`.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Whether to allow loading models and tokenizers that ship custom Python code from the Hub.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Whether to disable dropout in the model.
        logprob_chunk_size (`int`, *optional*):
            Number of completion tokens sent through the LM head at once when computing log-probabilities. Only the
            completion tokens are projected onto the vocabulary, never every position. Defaults to as many tokens as
            keep one chunk at 2**22 logits (131 tokens for a 32k vocabulary).
        share_prompt (`bool`, *optional*, defaults to `True`):
            Whether to compute each prompt once per step: the prompt and its k completions are packed into one
            sequence with a block attention mask (each completion attends to the prompt and causally to itself), so
            a prompt group costs `P + sum R_i` tokens instead of `k P + sum R_i`. Same loss and gradients as without.
            Falls back to one sequence per completion, with a warning, for a model that cannot take the mask (an
            attention implementation other than `eager`/`sdpa`, or an architecture whose packed log-probabilities
            differ from the unpacked ones in a check when the trainer is built).

        dataset_num_proc (`int`, *optional*):
            Number of processes to use for processing the dataset.
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Maximum length of a prompt plus one completion (EOS included). Longer completions are truncated at the
            end. A prompt that leaves no room for a completion token raises an error naming the row. `None` disables
            truncation.
        max_completions (`int`, *optional*):
            Maximum number of completions kept per prompt. A prompt with more keeps its best and worst completion and
            completions at evenly spaced reward ranks in between. `None` keeps all.
        pad_to_multiple_of (`int`, *optional*):
            If set, sequences are padded to a multiple of this value.

        reward_weights (`list[float]`, *optional*):
            Weights of the reward functions passed to the trainer when the dataset has no `rewards` column. Defaults
            to 1 for each.
        reward_batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass when a reward model scores the completions before training.

        length_penalty (`float`, *optional*, defaults to `1.0`):
            Exponent of the length normalization: a completion's score is its summed token log-probability divided
            by `(number of completion tokens) ** length_penalty`.
        rrhf_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the ranking (hinge) loss.
        sft_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the negative log-likelihood of each prompt's best completion. Without it RRHF tends to
            degenerate into repetition.
        sft_loss_type (`str`, *optional*, defaults to `"mean"`):
            How the best completion's token NLLs are reduced. `"mean"`: averaged over its tokens, as in the official
            code (GanjinZero/RRHF); the term then has the per-token scale of the length-normalized scores `p_i` and
            `sft_weight` means the same at any completion length. `"sum"`: summed, as in the paper's eq. 4; the term
            then grows with the completion's length.

        num_generations (`int`, *optional*):
            Completions sampled from the current policy per prompt, during training. `None` (the default): 8 (GRPO's
            default) when the training dataset is prompt-only (no `completions` and no `rewards` column), 0
            otherwise. `0`: offline
            RRHF, nothing is sampled (the dataset must hold `completions`). `>= 2`: online RRHF; a row that also
            carries fixed `completions` ranks them together with its samples (a mixed pool). Online RRHF needs
            `reward_funcs`, which score every candidate. This and the sampling settings below have the names, meanings
            and defaults of [`~trl.GRPOConfig`], except that `per_device_train_batch_size` counts prompts here, each
            with its whole group of candidates, where GRPO counts completions (see "Online RRHF" in docs/rrhf.md).
        max_completion_length (`int`, *optional*, defaults to `512`):
            Maximum number of tokens of a sampled completion. A sample cut there counts in
            `completions/clipped_ratio`. `max_length` still applies to a prompt plus a candidate when training.
        generation_batch_size (`int`, *optional*):
            As in GRPO, the number of completions (global, all processes) sampled in one generation round:
            `generation_batch_size / num_generations` prompts are sampled at once, then trained on over
            `steps_per_generation` micro-batches of `per_device_train_batch_size` prompts per process. If `None`, it
            is `per_device_train_batch_size * num_processes * steps_per_generation * num_generations`. Mutually
            exclusive with `steps_per_generation`.
        steps_per_generation (`int`, *optional*):
            Micro-batches (forward/backward passes) trained on the candidates of one generation round. If `None`, it
            defaults to `gradient_accumulation_steps` (one round per optimizer step). Mutually exclusive with
            `generation_batch_size`.
        shuffle_dataset (`bool`, *optional*, defaults to `True`):
            Whether to shuffle the prompts of an online run (as GRPO: a permutation seeded with `seed`; a buffered
            shuffle for an `IterableDataset`). Offline runs shuffle as `Trainer` does.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature. `0` samples greedily (all samples of a prompt are then equal: use it for tests only).
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling: keep the most likely tokens whose probabilities add up to `top_p`. Must be in (0, 1].
        top_k (`int`, *optional*, defaults to `0`):
            Keep only the `top_k` most likely tokens. `0` disables it.
        min_p (`float`, *optional*):
            Minimum token probability, scaled by the probability of the most likely token. Between 0 and 1.
        repetition_penalty (`float`, *optional*, defaults to `1.0`):
            Penalty on tokens already in the prompt or the completion; values > 1 discourage repeating.
        generation_kwargs (`dict[str, Any]`, *optional*):
            Extra keyword arguments for `model.generate` (transformers) or vLLM's `SamplingParams`. They override the
            settings above where they overlap.
        use_vllm (`bool`, *optional*, defaults to `False`):
            Sample with vLLM instead of `model.generate` (needs `vllm` and the `trl_won.rrhf.vllm` module).
        vllm_mode (`str`, *optional*, defaults to `"colocate"`):
            `"server"`: send requests to a running vLLM server (`vllm serve`); `"colocate"`: run vLLM in the training
            process, sharing its GPUs.
        vllm_model_impl (`str`, *optional*, defaults to `"vllm"`):
            Model implementation vLLM uses: `"vllm"` or `"transformers"`.
        vllm_enable_sleep_mode (`bool`, *optional*, defaults to `False`):
            Offload vLLM's weights and cache during the optimizer step (colocate mode).
        vllm_structured_outputs_regex (`str`, *optional*):
            Regex for vLLM structured outputs. `None` disables them.
        vllm_server_base_url (`str`, *optional*):
            Base URL of the vLLM server (e.g. `"http://localhost:8000"`). If set, `vllm_server_host` and
            `vllm_server_port` are ignored.
        vllm_server_host (`str`, *optional*, defaults to `"0.0.0.0"`):
            Host of the vLLM server.
        vllm_server_port (`int`, *optional*, defaults to `8000`):
            Port of the vLLM server.
        vllm_server_timeout (`float`, *optional*, defaults to `240.0`):
            Seconds to wait for the vLLM server to be up before a `ConnectionError`.
        vllm_group_port (`int`, *optional*, defaults to `51216`):
            Port of the weight-update group shared with the vLLM server.
        vllm_gpu_memory_utilization (`float`, *optional*, defaults to `0.3`):
            Share of GPU memory vLLM may use in colocate mode.
        vllm_max_model_length (`int`, *optional*):
            vLLM's context window; at least the longest prompt plus `max_completion_length`. Inferred from the model
            config when `None`.
        vllm_tensor_parallel_size (`int`, *optional*, defaults to `1`):
            Tensor-parallel size of vLLM in colocate mode.
        log_completions (`bool`, *optional*, defaults to `False`):
            Log the prompts, candidates and rewards of the latest generation rounds every `logging_steps`: printed as
            a table with `rich` if installed, and logged to `wandb`/`trackio` when they are in `report_to`.
        num_completions_to_print (`int`, *optional*):
            Rows of that table printed with `rich`. `None` prints all.

    > [!NOTE]
    > These parameters have default values different from [`~transformers.TrainingArguments`]:
    > - `logging_steps`: Defaults to `10` instead of `500`.
    > - `activation_checkpointing`: Defaults to `True` instead of `False` (TRL's default, set under transformers'
    >   current name; `gradient_checkpointing`, its deprecated alias, is still accepted).
    > - `bf16`: Defaults to `True` if `fp16` is not set and the machine has a bf16 accelerator (or `use_cpu` is set),
    >   instead of `False`.
    > - `learning_rate`: Defaults to `2e-5` (the RRHF paper's) instead of `5e-5`.
    """

    _VALID_DICT_FIELDS = _BaseConfig._VALID_DICT_FIELDS + ["model_init_kwargs", "generation_kwargs"]

    learning_rate: float = field(
        default=2e-5,
        metadata={"help": "The initial learning rate for AdamW (the RRHF paper uses 2e-5 for full fine-tuning)."},
    )

    # Parameters that control the model
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `AutoModelForCausalLM.from_pretrained`, used when the `model` argument of "
            "the `RRHFTrainer` is provided as a string."
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Whether to allow loading models and tokenizers that ship custom Python code from the Hub."},
    )
    disable_dropout: bool = field(default=True, metadata={"help": "Whether to disable dropout in the model."})
    logprob_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Completion tokens sent through the LM head at once. Defaults to as many as keep one chunk at "
            "2**22 logits (131 tokens for a 32k vocabulary)."
        },
    )
    share_prompt: bool = field(
        default=True,
        metadata={
            "help": "Compute each prompt once per step: pack it with its completions into one sequence with a block "
            "attention mask. Same loss and gradients. Falls back, with a warning, for models that cannot take it."
        },
    )

    # Parameters that control the data preprocessing
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Number of processes to use for processing the dataset."}
    )
    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Maximum length of a prompt plus one completion. Longer completions are truncated at the end. "
            "`None` disables truncation."
        },
    )
    max_completions: int | None = field(
        default=None,
        metadata={
            "help": "Maximum completions kept per prompt: the best, the worst and evenly spaced reward ranks in "
            "between. `None` keeps all."
        },
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "If set, sequences are padded to a multiple of this value."}
    )

    # Parameters that control the rewards
    reward_weights: list[float] | None = field(
        default=None,
        metadata={"help": "Weights of the reward functions (when the dataset has no `rewards` column). Default 1."},
    )
    reward_batch_size: int = field(
        default=16, metadata={"help": "Sequences per forward pass when a reward model scores the completions."}
    )

    # Parameters that control the loss
    length_penalty: float = field(
        default=1.0,
        metadata={"help": "Exponent of the length normalization of each completion's summed log-probability."},
    )
    rrhf_weight: float = field(default=1.0, metadata={"help": "Weight of the ranking (hinge) loss."})
    sft_weight: float = field(
        default=1.0, metadata={"help": "Weight of the negative log-likelihood of each prompt's best completion."}
    )
    sft_loss_type: str = field(
        default="mean",
        metadata={
            "help": "Reduction of the best completion's token NLLs: `mean` (official code) or `sum` (paper eq. 4).",
            "choices": ["mean", "sum"],
        },
    )

    # Parameters that control online sampling (GRPO's names, meanings and defaults)
    num_generations: int | None = field(
        default=None,
        metadata={
            "help": "Completions sampled from the current policy per prompt. `None`: 8 (GRPO's default) for a "
            "prompt-only dataset (no `completions`, no `rewards`), else 0. 0: offline RRHF. >= 2: online RRHF (rows "
            "with fixed `completions` rank them together with their samples)."
        },
    )
    max_completion_length: int | None = field(
        default=512, metadata={"help": "Maximum length of a sampled completion, in tokens."}
    )
    generation_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Completions (global, as in GRPO) sampled per generation round: generation_batch_size / "
            "num_generations prompts. If `None`: per_device_train_batch_size * num_processes * steps_per_generation "
            "* num_generations. Mutually exclusive with `steps_per_generation`."
        },
    )
    steps_per_generation: int | None = field(
        default=None,
        metadata={
            "help": "Micro-batches trained on one generation round's candidates. If `None`, it defaults to "
            "`gradient_accumulation_steps`. Mutually exclusive with `generation_batch_size`."
        },
    )
    shuffle_dataset: bool = field(
        default=True,
        metadata={"help": "Whether to shuffle the prompts of an online run (a permutation seeded with `seed`)."},
    )
    temperature: float = field(
        default=1.0,
        metadata={"help": "Temperature for sampling. The higher the temperature, the more random the completions."},
    )
    top_p: float = field(
        default=1.0,
        metadata={"help": "Cumulative probability of the top tokens to consider. Must be in (0, 1]."},
    )
    top_k: int = field(
        default=0,
        metadata={"help": "Number of most likely tokens to keep for top-k filtering. 0 disables it."},
    )
    min_p: float | None = field(
        default=None,
        metadata={"help": "Minimum token probability, scaled by that of the most likely token. Between 0 and 1."},
    )
    repetition_penalty: float = field(
        default=1.0,
        metadata={"help": "Penalty on tokens already in the prompt or completion; > 1 discourages repeating."},
    )
    generation_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Extra keyword arguments for `model.generate` (transformers) or vLLM's `SamplingParams`; they "
            "override the other generation settings where they overlap."
        },
    )
    use_vllm: bool = field(
        default=False,
        metadata={"help": "Sample with vLLM instead of `model.generate`. Requires `vllm` to be installed."},
    )
    vllm_mode: str = field(
        default="colocate",
        metadata={
            "help": "vLLM integration when `use_vllm` is set: `server` (a separate `vllm serve` process) or "
            "`colocate` (vLLM in the training process, sharing its GPUs).",
            "choices": ["server", "colocate"],
        },
    )
    vllm_model_impl: str = field(
        default="vllm",
        metadata={
            "help": "Model implementation vLLM uses: `vllm` or `transformers`.",
            "choices": ["vllm", "transformers"],
        },
    )
    vllm_enable_sleep_mode: bool = field(
        default=False,
        metadata={"help": "Offload vLLM's weights and cache during the optimizer step (colocate mode)."},
    )
    vllm_structured_outputs_regex: str | None = field(
        default=None,
        metadata={"help": "Regex for vLLM structured outputs. If `None` (default), structured outputs are disabled."},
    )
    vllm_server_base_url: str | None = field(
        default=None,
        metadata={
            "help": "Base URL for the vLLM server (e.g., 'http://localhost:8000'). If provided, `vllm_server_host` "
            "and `vllm_server_port` are ignored."
        },
    )
    vllm_server_host: str = field(default="0.0.0.0", metadata={"help": "Host of the vLLM server to connect to."})
    vllm_server_port: int = field(default=8000, metadata={"help": "Port of the vLLM server to connect to."})
    vllm_server_timeout: float = field(
        default=240.0,
        metadata={"help": "Seconds to wait for the vLLM server to be up before raising a `ConnectionError`."},
    )
    vllm_group_port: int = field(
        default=51216, metadata={"help": "Port of the weight-update group shared with the vLLM server."}
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3, metadata={"help": "Share of GPU memory vLLM may use (colocate mode)."}
    )
    vllm_max_model_length: int | None = field(
        default=None,
        metadata={
            "help": "Context window for vLLM: at least the longest prompt plus `max_completion_length`. Inferred "
            "from the model config if omitted."
        },
    )
    vllm_tensor_parallel_size: int = field(
        default=1, metadata={"help": "Tensor-parallel size for vLLM (colocate mode)."}
    )
    log_completions: bool = field(
        default=False,
        metadata={
            "help": "Log the prompts, candidates and rewards of the latest generation rounds every `logging_steps`: "
            "printed with `rich` if installed, logged to wandb/trackio when they are in `report_to`."
        },
    )
    num_completions_to_print: int | None = field(
        default=None, metadata={"help": "Number of completions to print with `rich`. If `None`, all are printed."}
    )

    def __post_init__(self):
        # TRL defaults to bf16, which `TrainingArguments` rejects on a machine without a bf16 accelerator unless
        # `use_cpu` is set. Left unset, fall back to float32 there so that the same script runs on a laptop.
        if self.bf16 is None and not self.fp16 and not self.use_cpu and not is_torch_bf16_gpu_available():
            self.bf16 = False
        super().__post_init__()
        if self.max_completions is not None and self.max_completions < 2:
            raise ValueError(f"`max_completions` must be at least 2 to rank anything, got {self.max_completions}.")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(
                f"`max_length` must be at least 2 (one prompt and one completion token), got {self.max_length}."
            )
        if self.reward_batch_size < 1:
            raise ValueError(f"`reward_batch_size` must be >= 1, got {self.reward_batch_size}.")
        if self.sft_loss_type not in ("mean", "sum"):
            raise ValueError(
                f"`sft_loss_type` must be 'mean' (the official code's per-token average) or 'sum' (the paper's eq. "
                f"4), got {self.sft_loss_type!r}."
            )
        if self.rrhf_weight < 0 or self.sft_weight < 0:
            raise ValueError(
                f"`rrhf_weight` and `sft_weight` must be >= 0, got {self.rrhf_weight} and {self.sft_weight}."
            )
        self._check_generation_settings()

    def _check_generation_settings(self):
        """GRPO's checks and derivation of `generation_batch_size` / `steps_per_generation`, with prompts counted."""
        if self.num_generations is not None and (self.num_generations < 0 or self.num_generations == 1):
            raise ValueError(
                f"`num_generations` must be 0 (offline RRHF) or at least 2 (online: ranking needs 2 candidates per "
                f"prompt), got {self.num_generations}."
            )
        if self.max_completion_length is not None and self.max_completion_length < 1:
            raise ValueError(f"`max_completion_length` must be >= 1, got {self.max_completion_length}.")
        if self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}.")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError(f"`min_p` must be between 0 and 1, got {self.min_p}.")
        if self.vllm_mode not in ("server", "colocate"):
            raise ValueError(f"`vllm_mode` must be 'server' or 'colocate', got {self.vllm_mode!r}.")
        prompts_per_step = self.per_device_train_batch_size * self.world_size  # prompts, all processes
        if self.generation_batch_size is not None and self.steps_per_generation is not None:
            raise ValueError(
                "'generation_batch_size' and 'steps_per_generation' can not be both configured at the same time"
            )
        if self.generation_batch_size is not None:
            # GRPO counts completions: a round samples generation_batch_size / num_generations prompts.
            num_generations = self.num_generations or DEFAULT_NUM_GENERATIONS
            if self.generation_batch_size % (num_generations * prompts_per_step) != 0:
                raise ValueError(
                    f"generation_batch_size ({self.generation_batch_size}) counts completions, as in GRPO: it must be "
                    f"divisible by num_generations ({num_generations}) times the global batch size in prompts "
                    f"(per_device_train_batch_size * num_processes = {prompts_per_step})."
                )
            self.steps_per_generation = self.generation_batch_size // (num_generations * prompts_per_step)
        elif self.steps_per_generation is None:
            self.steps_per_generation = self.gradient_accumulation_steps
        if self.steps_per_generation < 1:
            raise ValueError(f"`steps_per_generation` must be >= 1, got {self.steps_per_generation}.")
        if self.generation_batch_size is None and self.num_generations:
            self.generation_batch_size = prompts_per_step * self.steps_per_generation * self.num_generations

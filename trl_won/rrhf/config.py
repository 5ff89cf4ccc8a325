from dataclasses import dataclass, field
from typing import Any

from transformers.utils import is_torch_bf16_gpu_available
from trl.trainer.base_config import _BaseConfig


@dataclass
class RRHFConfig(_BaseConfig):
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

    > [!NOTE]
    > These parameters have default values different from [`~transformers.TrainingArguments`]:
    > - `logging_steps`: Defaults to `10` instead of `500`.
    > - `gradient_checkpointing`: Defaults to `True` instead of `False`.
    > - `bf16`: Defaults to `True` if `fp16` is not set and the machine has a bf16 accelerator (or `use_cpu` is set),
    >   instead of `False`.
    > - `learning_rate`: Defaults to `2e-5` (the RRHF paper's) instead of `5e-5`.
    """

    _VALID_DICT_FIELDS = _BaseConfig._VALID_DICT_FIELDS + ["model_init_kwargs"]

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

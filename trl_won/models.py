"""Loading models and tokenizers, and wrapping them with PEFT, the way TRL's trainers do.

A model can be given as a path or hub id (loaded with `from_pretrained`, optionally quantized with bitsandbytes) or as
an already built object. These helpers keep that logic in one place for every trainer, generator and judge.
"""

import logging
from typing import Any

import torch
from accelerate.utils import is_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from trl.trainer.utils import create_model_from_path, get_config_model_id

from .identity import weights_digest  # noqa: F401 (re-exported: its home was here)


logger = logging.getLogger(__name__)


def is_quantized(model) -> bool:
    """Whether `model` was loaded in 4-bit or 8-bit with bitsandbytes."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def with_device_map(
    model_init_kwargs: dict[str, Any] | None = None, *, training: bool = False, quantized: bool = False, state=None
) -> dict[str, Any]:
    """`model_init_kwargs` with the `device_map` that gives this process one whole copy of the model.

    `from_pretrained` with TRL's default (`device_map="auto"` on a GPU machine) splits a model over every visible GPU,
    which is wrong wherever each process holds its own copy. This sets:

    - for a model this process only runs (a judge, a reward model, a policy that samples, a reference model):
      `{"": device}`, this process's device, when that is an accelerator; on CPU nothing (TRL loads on CPU). A
      `device_map` the caller set is kept.
    - for a model that is trained (`training=True`) under distributed training (DDP or DeepSpeed): `None`, since the
      trainer places the model itself; except a 4/8-bit model (`quantized=True`) under DDP, which cannot be moved
      after loading: `{"": local_process_index}`, this process's GPU. These override a `device_map` the caller set.
      Without distributed training nothing is set (TRL's default).

    Args:
        model_init_kwargs (`dict`, *optional*):
            Keyword arguments for `from_pretrained`; not modified.
        training (`bool`, *optional*, defaults to `False`):
            Whether the model will be trained by a `Trainer`.
        quantized (`bool`, *optional*, defaults to `False`):
            Whether the model is loaded in 4 or 8 bits.
        state ([`~accelerate.PartialState`], *optional*):
            This process's place in the run (default: `PartialState()`, CPU-only if `ACCELERATE_USE_CPU` is set).

    Returns:
        `dict`: A copy of `model_init_kwargs`, with `device_map` set as above.
    """
    kwargs = dict(model_init_kwargs or {})
    if state is None:
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    if training:
        distributed = state.distributed_type
        if distributed == "MULTI_GPU" and quantized:
            kwargs["device_map"] = {"": state.local_process_index}
        elif distributed in ("MULTI_GPU", "DEEPSPEED"):
            kwargs["device_map"] = None
    elif state.device.type not in ("cpu", "mps"):
        kwargs.setdefault("device_map", {"": state.device})
    return kwargs


def load_model(
    model: "str | PreTrainedModel",
    architecture=AutoModelForCausalLM,
    *,
    model_init_kwargs: dict[str, Any] | None = None,
    quantization_config=None,
    trust_remote_code: bool = False,
    argument_name: str = "model",
    **forced_kwargs,
) -> PreTrainedModel:
    """Return `model` if it is already a model, else load it from a path or hub id with `architecture`.

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            A model object, or a path/hub id passed to `architecture.from_pretrained`.
        architecture (*optional*, defaults to `AutoModelForCausalLM`):
            Auto class to load with.
        model_init_kwargs (`dict`, *optional*):
            Keyword arguments for `from_pretrained`. `dtype` defaults to `float32`, as in TRL.
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            bitsandbytes 4-bit/8-bit quantization, applied when loading from a path.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Forwarded to `from_pretrained`.
        argument_name (`str`, *optional*, defaults to `"model"`):
            Name of the caller's argument, used in error messages.
        **forced_kwargs:
            Keyword arguments that always go to `from_pretrained` (for instance `num_labels=1`).
    """
    if isinstance(model, str):
        kwargs = dict(model_init_kwargs or {})
        if quantization_config is not None:
            if "quantization_config" in kwargs:
                raise ValueError(
                    f"`quantization_config` for `{argument_name}` is set both as an argument and in "
                    "`model_init_kwargs`. Set it in only one place."
                )
            kwargs["quantization_config"] = quantization_config
        kwargs.setdefault("trust_remote_code", trust_remote_code)
        kwargs.update(forced_kwargs)
        return create_model_from_path(model, architecture, **kwargs)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"`{argument_name}` must be a path, a hub id or a model object, got {type(model).__name__}: {model!r}."
        )
    if quantization_config is not None:
        raise ValueError(
            f"`quantization_config` was given but `{argument_name}` is already instantiated, so it cannot be "
            "quantized. Pass the model as a path or hub id, or quantize it when you load it."
        )
    return model


def load_reward_model(model: "str | PreTrainedModel", **kwargs) -> PreTrainedModel:
    """Load a sequence-classification reward model (`num_labels=1`) from a path, or check an object's head size."""
    if isinstance(model, str):
        return load_model(model, AutoModelForSequenceClassification, num_labels=1, **kwargs)
    model = load_model(model, **kwargs)
    num_labels = getattr(model.config, "num_labels", None)
    if num_labels != 1:
        raise ValueError(
            f"The reward model has `num_labels={num_labels}`, but a reward model must output one score per sequence. "
            "Load it with `AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)`."
        )
    return model


def load_tokenizer(model_or_path, processing_class=None, trust_remote_code: bool = False, padding_side=None):
    """Return `processing_class`, or load the tokenizer that belongs to `model_or_path`; give it a pad token.

    A tokenizer without a pad token gets its EOS token as pad token, as TRL's trainers do.
    """
    if processing_class is None:
        name = model_or_path if isinstance(model_or_path, str) else get_config_model_id(model_or_path.config)
        if not name:
            raise ValueError(
                "Cannot find a tokenizer for a model object that was not loaded from a path. Pass the tokenizer "
                "explicitly (`processing_class=` / `tokenizer=`)."
            )
        processing_class = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return processing_class


def prepare_peft_model(model: PreTrainedModel, peft_config, args=None) -> PreTrainedModel:
    """Wrap `model` with `peft_config` and make it trainable the way TRL's trainers do.

    - rejects a model that already carries an adapter together with a new `peft_config`;
    - with gradient checkpointing, makes the inputs require grad so that the adapter receives gradients;
    - for a 4-bit/8-bit base model (QLoRA), keeps the trainable adapter weights in bfloat16 when training in bf16 (the
      QLoRA recipe), and in float32 otherwise.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            The base model.
        peft_config ([`~peft.PeftConfig`] or `None`):
            The adapter configuration; `None` returns `model` unchanged.
        args ([`~transformers.TrainingArguments`], *optional*):
            Read for `gradient_checkpointing` and `bf16`.
    """
    if peft_config is None:
        return model
    from peft import PeftConfig, PromptLearningConfig, get_peft_model

    if not isinstance(peft_config, PeftConfig):
        raise TypeError(
            f"`peft_config` must be a `peft.PeftConfig` (for example `peft.LoraConfig`), got "
            f"{type(peft_config).__name__}."
        )
    if isinstance(peft_config, PromptLearningConfig):
        raise ValueError(
            f"{type(peft_config).__name__} adds virtual tokens to every sequence, which shifts the positions the "
            "losses read. Use an adapter that keeps sequence positions, such as `LoraConfig`."
        )
    if is_peft_model(model):
        raise ValueError(
            "The model already carries a PEFT adapter and a `peft_config` was also given. Merge the adapter "
            "(`model.merge_and_unload()`) and pass the merged model with the new `peft_config`, or pass the adapted "
            "model without `peft_config` to keep training its adapter."
        )
    quantized = is_quantized(model)
    model = get_peft_model(model, peft_config)
    if args is not None and getattr(args, "gradient_checkpointing", False):
        model.enable_input_require_grads()
    if quantized and args is not None and getattr(args, "bf16", False):
        for name, param in model.named_parameters():
            if param.requires_grad and "lora_magnitude_vector" not in name:
                param.data = param.data.to(torch.bfloat16)
    return model


def restore_adapter_dtypes(model, args) -> None:
    """Undo TRL `RewardTrainer`'s cast of a 4/8-bit model's trainable weights to bfloat16 when training without bf16.

    `RewardTrainer` casts every trainable weight of a quantized PEFT model (the LoRA matrices, and the `score` head
    that `task_type="SEQ_CLS"` keeps trainable) to bfloat16, the QLoRA recipe, whatever `args.bf16` says. Under bf16
    autocast that is right. Without it (`bf16=False`, the default on a CPU) the score head then meets activations in
    the model's dtype (float32 unless `dtype` says otherwise) and the forward pass fails with "expected m1 and m2 to
    have the same dtype". So without bf16 each trainable weight goes back to the dtype `get_peft_model` gave it: a
    `modules_to_save` copy (the score head) the dtype of the module it copies, adapter weights float32 (PEFT's
    `autocast_adapter_dtype`; PEFT's layers cast their input to the adapter's dtype). With bf16, or for a model that
    is not quantized, nothing changes.

    Args:
        model ([`~peft.PeftModel`]):
            The trainer's model, after `RewardTrainer.__init__`.
        args ([`~transformers.TrainingArguments`]):
            Read for `bf16`.
    """
    if args is None or getattr(args, "bf16", False) or not is_quantized(unwrap_peft(model)):
        return
    from peft.utils import ModulesToSaveWrapper

    copy_dtypes = {}  # id of a trainable copy's parameter -> the dtype of the module it copies
    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            original = [p.dtype for p in module.original_module.parameters() if p.is_floating_point()]
            for parameter in module.modules_to_save.parameters():
                copy_dtypes[id(parameter)] = original[0] if original else torch.float32
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.is_floating_point():
            dtype = copy_dtypes.get(id(parameter), torch.float32)
            if parameter.dtype != dtype:
                parameter.data = parameter.data.to(dtype)


def unwrap_peft(model):
    """The transformers model under a PEFT wrapper (the same object when there is no wrapper)."""
    return model.get_base_model() if is_peft_model(model) else model

"""What the subcommands share: datasets read as TRL's scripts read them, the judge's flags, and argument checks.

Every helper here raises [`~trl_won.errors.UsageError`] for a wrong or missing argument, so that `trl-won` prints one
line and exits 2 instead of a traceback.
"""

import logging
import os
from dataclasses import dataclass, field, replace

from ..dataset_loading import FILE_BUILDERS, load_dataset_dict
from ..errors import NothingProducedError, UsageError


logger = logging.getLogger(__name__)

NO_DATASET = (
    "Either `datasets` or `dataset_name` must be provided: --dataset_name (a hub id, a .json/.jsonl/.parquet/.csv "
    "file or a save_to_disk folder), or a `datasets:` mixture in --config (or --datasets PATH [PATH ...])."
)


def require(value, flag: str, what: str):
    """`value`, or a [`UsageError`] saying that `flag` is required and what it is."""
    if value is None or value == "":
        raise UsageError(required(flag, what))
    return value


def required(flag: str, what: str) -> str:
    """The message saying that `flag` is required and what it is."""
    return f"{flag} is required: {what}."


def check_required(*requirements: tuple[bool, str]) -> None:
    """One [`UsageError`] naming every missing required argument at once: `requirements` are `(given, message)`
    pairs, e.g. `(args.model is not None, required("--model_name_or_path", "the model to train"))`."""
    missing = [message for given, message in requirements if not given]
    if len(missing) == 1:
        raise UsageError(missing[0])
    if missing:
        numbered = " ".join(f"({number}) {message}" for number, message in enumerate(missing, 1))
        raise UsageError(f"{len(missing)} required arguments are missing: {numbered}")


def has_dataset(dataset_name: str | None, mixture=None) -> bool:
    """Whether a script was given a dataset: `--dataset_name` or a `datasets:` mixture."""
    return bool(dataset_name) or (mixture is not None and bool(mixture.datasets))


# TRL's `DatasetMixtureConfig` flags that `label` and `west-of-n` cannot honour (both read one split of a dataset held
# in memory), with why: hidden from their help, and an error when given (on the command line or in --config).
UNSUPPORTED_MIXTURE_FLAGS = {
    "streaming": "it reads the whole split into memory (drop it; use --max_samples for a part)",
    "test_split_size": "it uses one split, --dataset_train_split (drop it)",
}


def hide_unsupported_mixture_flags(parser) -> None:
    """Leave [`UNSUPPORTED_MIXTURE_FLAGS`] out of `parser`'s help (they still parse, to be rejected by name)."""
    import argparse

    for action in parser._actions:
        if action.dest in UNSUPPORTED_MIXTURE_FLAGS:
            action.help = argparse.SUPPRESS


def reject_unsupported_mixture_flags(mixture, command: str) -> None:
    """A [`UsageError`] naming the first of [`UNSUPPORTED_MIXTURE_FLAGS`] given to `command`."""
    if mixture is None:
        return
    reject(
        "--streaming",
        mixture.streaming,
        False,
        f"is not supported by {command}: {UNSUPPORTED_MIXTURE_FLAGS['streaming']}",
    )
    reject(
        "--test_split_size",
        mixture.test_split_size,
        None,
        f"is not supported by {command}: {UNSUPPORTED_MIXTURE_FLAGS['test_split_size']}",
    )


def check_model_path(value: str | None, flag: str) -> str | None:
    """A model argument that is plainly a local path (absolute, `./`, `../`, `~`, or two `/`) must exist."""
    if value is None:
        return None
    expanded = os.path.expanduser(value)
    looks_local = value.startswith(("/", "./", "../", "~")) or value.count("/") > 1 or value in (".", "..")
    if looks_local and not os.path.exists(expanded):
        raise UsageError(f"{flag} {value!r}: no such directory (give a saved model's folder or a hub id org/name).")
    return expanded if looks_local else value


def reject(flag: str, value, default, why: str):
    """A flag that cannot be honoured here is an error (`flag: why`) rather than silently ignored."""
    if value != default:
        raise UsageError(f"{flag} {why}.")


def _local_files(mixture):
    """TRL's `DatasetConfig` entries, with a bare local data file turned into its builder and `data_files`."""
    configs = []
    for config in mixture.datasets:
        extension = os.path.splitext(config.path)[1].lower()
        if config.data_files is None and extension in FILE_BUILDERS:
            if not os.path.isfile(config.path):
                raise FileNotFoundError(f"datasets: {config.path!r}: no such file.")
            config = replace(config, path=FILE_BUILDERS[extension], data_files=config.path)
        configs.append(config)
    return replace(mixture, datasets=configs)


def load_script_dataset(dataset_name: str | None, dataset_config: str | None, mixture=None, streaming: bool = False):
    """The `DatasetDict` a script's arguments name, as `trl dpo`/`trl sft` load it: the `datasets` mixture if given
    (with a warning when `dataset_name` is given too), else `dataset_name`, else a [`UsageError`]."""
    if mixture is not None and mixture.datasets:
        from trl import get_dataset

        if dataset_name:
            logger.warning(
                "Both `datasets` and `dataset_name` are provided. The `datasets` argument will be used to load the "
                "dataset and `dataset_name` will be ignored."
            )
        return get_dataset(_local_files(mixture))
    if dataset_name:
        return load_dataset_dict(dataset_name, dataset_config, streaming=streaming)
    raise UsageError(NO_DATASET)


def dataset_source(dataset_name: str | None, mixture=None) -> str:
    """How error messages name the dataset a script read."""
    if mixture is not None and mixture.datasets:
        return "the `datasets` mixture"
    return f"--dataset_name {dataset_name!r}"


def check_produced(count: int, what: str, why: str):
    """A run that produced nothing failed at its job: a [`NothingProducedError`] saying what and why."""
    if count == 0:
        raise NothingProducedError(f"0 {what} produced: {why}")


JUDGE_MODEL = "the judge (a local causal LM, or a served model's name)"
JUDGE_NAME_FOR_URL = "--judge_base_url needs --judge_model_name_or_path: the model name the server knows."


@dataclass
class JudgeArguments:
    """The LLM judge's flags, the same in `trl-won label` and `trl-won west-of-n` (all start with `judge_`).

    Args:
        judge_model_name_or_path (`str`, *optional*):
            The judge: a local causal LM (path or hub id), or with `--judge_base_url` the model name the server knows.
        judge_base_url (`str`, *optional*):
            Root of an OpenAI-compatible API serving the judge (vLLM, TGI, llama.cpp, OpenAI), e.g.
            `http://localhost:8000/v1`.
        judge_api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`):
            Served judge: environment variable holding the API key (not needed by local servers).
        judge_template (`str`, *optional*, defaults to `"helpfulness"`):
            The judge's preamble: `summarization`, `helpfulness` or `harmlessness`.
        judge_chain_of_thought (`bool`, *optional*, defaults to `False`):
            Let the judge write a rationale before answering.
        judge_max_concurrency (`int`, *optional*, defaults to `32`):
            Served judge: requests in flight.
        judge_requests_per_second (`float`, *optional*):
            Served judge: request-rate limit.
        judge_use_chat_template (`bool`, *optional*, defaults to `False`):
            Local judge: send the request through its chat template (instruct models).
        judge_batch_size (`int`, *optional*, defaults to `16`):
            Local judge: sequences per forward pass.
        judge_max_length (`int`, *optional*):
            Local judge: longest judge prompt in tokens.
        judge_dtype (`str`, *optional*):
            Local judge: `bfloat16`, `float16`, `float32` or `auto`.
        judge_load_in_4bit (`bool`, *optional*, defaults to `False`):
            Local judge: load it in 4-bit (nf4) with bitsandbytes.
        judge_load_in_8bit (`bool`, *optional*, defaults to `False`):
            Local judge: load it in 8-bit with bitsandbytes.
    """

    judge_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The judge: a local causal LM, or the served model's name with --judge_base_url."},
    )
    judge_base_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible API serving the judge, e.g. http://localhost:8000/v1."}
    )
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Served judge: environment variable with the API key."}
    )
    judge_template: str = field(
        default="helpfulness", metadata={"help": "Judge preamble: summarization, helpfulness or harmlessness."}
    )
    judge_chain_of_thought: bool = field(default=False, metadata={"help": "The judge writes a rationale first."})
    judge_max_concurrency: int = field(default=32, metadata={"help": "Served judge: requests in flight."})
    judge_requests_per_second: float | None = field(default=None, metadata={"help": "Served judge: rate limit."})
    judge_tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Served judge: the served model's tokenizer (path or hub id). The judge then renders the local "
            "judge's exact prompt and calls the completions endpoint (vLLM, llama.cpp, TGI), so its labels equal a "
            "local judge's on the same weights. Without it the chat endpoint is used (labels of another judge)."
        },
    )
    judge_use_chat_template: bool = field(
        default=False,
        metadata={"help": "Local judge, or served with --judge_tokenizer_name_or_path: use the chat template."},
    )
    judge_batch_size: int = field(default=16, metadata={"help": "Local judge: sequences per forward pass."})
    judge_max_length: int | None = field(default=None, metadata={"help": "Local judge: longest prompt in tokens."})
    judge_dtype: str | None = field(
        default=None,
        metadata={"help": "Local judge: dtype.", "choices": ["auto", "bfloat16", "float16", "float32"]},
    )
    judge_load_in_4bit: bool = field(default=False, metadata={"help": "Local judge: load in 4-bit (nf4)."})
    judge_load_in_8bit: bool = field(default=False, metadata={"help": "Local judge: load in 8-bit."})


def add_checkpointing_off_flags(parser) -> None:
    """`--no_activation_checkpointing`, and TRL's `--no_gradient_checkpointing` (its deprecated alias), on a parser of
    a training config with [`~trl_won.utils.CheckpointingOnByDefault`]: the parser only makes `--no_*` flags for
    fields that default to `True`, and these default to unset (which means on)."""
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        parser.add_argument(
            f"--no_{name}",
            f"--no-{name.replace('_', '-')}",
            action="store_false",
            dest=name,
            default=None,
            help=f"Turn activation checkpointing off (the same as `--{name} false`).",
        )


def bnb_config(load_in_4bit: bool, load_in_8bit: bool, flag_prefix: str):
    """A bitsandbytes config for `--{prefix}_load_in_4bit`/`_8bit`, or `None`."""
    if load_in_4bit and load_in_8bit:
        raise UsageError(f"Give at most one of --{flag_prefix}_load_in_4bit and --{flag_prefix}_load_in_8bit.")
    if not (load_in_4bit or load_in_8bit):
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def make_judge(args: JudgeArguments, required: bool = True):
    """The pairwise judge `args` describe: served (`--judge_base_url`) or local; `None` if none and not `required`."""
    from ..rlaif import OpenAIJudge, TransformersJudge

    served_only = {"judge_batch_size": 16, "judge_max_length": None}
    served_only.update(judge_dtype=None, judge_load_in_4bit=False, judge_load_in_8bit=False)
    local_only = {
        "judge_max_concurrency": 32,
        "judge_requests_per_second": None,
        "judge_api_key_env": "OPENAI_API_KEY",
        "judge_tokenizer_name_or_path": None,
    }
    if args.judge_model_name_or_path is None:
        if args.judge_base_url is not None:
            raise UsageError(JUDGE_NAME_FOR_URL)
        if required:
            require(None, "--judge_model_name_or_path", JUDGE_MODEL)
        return None
    if args.judge_base_url is not None:
        for name, default in served_only.items():
            reject(f"--{name}", getattr(args, name), default, "is for a local judge; drop it with --judge_base_url")
        if args.judge_tokenizer_name_or_path is None:
            reject(
                "--judge_use_chat_template",
                args.judge_use_chat_template,
                False,
                "needs --judge_tokenizer_name_or_path with --judge_base_url (the prompt is rendered client-side)",
            )
        return OpenAIJudge(
            args.judge_model_name_or_path,
            base_url=args.judge_base_url,
            template=args.judge_template,
            api_key_env=args.judge_api_key_env,
            chain_of_thought=args.judge_chain_of_thought,
            max_concurrency=args.judge_max_concurrency,
            requests_per_second=args.judge_requests_per_second,
            tokenizer=args.judge_tokenizer_name_or_path,
            use_chat_template=args.judge_use_chat_template,
        )
    for name, default in local_only.items():
        reject(f"--{name}", getattr(args, name), default, "is for a served judge: give --judge_base_url too")
    init_kwargs = {} if args.judge_dtype is None else {"dtype": args.judge_dtype}
    return TransformersJudge(
        check_model_path(args.judge_model_name_or_path, "--judge_model_name_or_path"),
        template=args.judge_template,
        chain_of_thought=args.judge_chain_of_thought,
        use_chat_template=args.judge_use_chat_template,
        batch_size=args.judge_batch_size,
        max_length=args.judge_max_length,
        quantization_config=bnb_config(args.judge_load_in_4bit, args.judge_load_in_8bit, "judge"),
        model_init_kwargs=init_kwargs,
    )

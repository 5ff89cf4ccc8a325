"""`trl-won west-of-n`: generate West-of-N preference pairs from prompts, and optionally train the student RM."""

import argparse
from dataclasses import dataclass, field, fields

from trl import DatasetMixtureConfig, ModelConfig, TrlParser

from ..dataset_loading import load_dataset_dict, select_split
from ..errors import UsageError
from ..west_of_n.config import StudentRewardConfig, WestOfNConfig
from .common import (
    JUDGE_NAME_FOR_URL,
    NO_DATASET,
    JudgeArguments,
    add_checkpointing_off_flags,
    bnb_config,
    check_model_path,
    check_produced,
    check_required,
    dataset_source,
    has_dataset,
    hide_unsupported_mixture_flags,
    load_script_dataset,
    make_judge,
    reject,
    reject_unsupported_mixture_flags,
    required,
)


EXAMPLES = """examples:
  # 16 samples per prompt from a policy, labeled by your base reward model, keeping the more confident half
  trl-won west-of-n --policy_name_or_path Qwen/Qwen2.5-1.5B-Instruct --reward_model_name_or_path my-org/base-rm \\
      --dataset_name prompts.jsonl --n 16 --confidence_quantile 0.5 --pairs_dir won-pairs

  # the same arguments with --train_student: the pairs are read back from --pairs_dir (nothing is regenerated), then
  # the student reward model trains on human pairs mixed 1:1 with them (LoRA, 4-bit)
  trl-won west-of-n --policy_name_or_path Qwen/Qwen2.5-1.5B-Instruct --reward_model_name_or_path my-org/base-rm \\
      --dataset_name prompts.jsonl --n 16 --confidence_quantile 0.5 --pairs_dir won-pairs \\
      --train_student --human_dataset_name human-pairs.jsonl --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \\
      --use_peft --lora_task_type SEQ_CLS --load_in_4bit --dtype bfloat16 --output_dir student-rm

  # an LLM judge as the base preference model (best and worst by knockout tournaments), served by vLLM
  #   vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000
  trl-won west-of-n --policy_name_or_path Qwen/Qwen2.5-1.5B-Instruct \\
      --judge_model_name_or_path Qwen/Qwen2.5-7B-Instruct --judge_base_url http://localhost:8000/v1 \\
      --dataset_name prompts.jsonl --pairs_dir won-pairs-judge

  # several processes split the prompts; rerunning resumes in --pairs_dir
  #   accelerate launch --num_processes 8 -m trl_won west-of-n --config west_of_n.yaml
"""


@dataclass
class WestOfNScriptArguments:
    """Script arguments of `trl-won west-of-n`. `--dataset_name` (or a `datasets:` mixture) holds the prompts: a
    `prompt` column, or `chosen`/`rejected` conversations the prompt is extracted from. The base preference model is
    `--reward_model_name_or_path` or an LLM judge (the `--judge_*` flags); `ModelConfig` describes the student.

    Args:
        dataset_name (`str`, *optional*):
            The prompts: a hub id, a `.json`/`.jsonl`/`.parquet`/`.csv` file or a saved dataset. Required unless a
            `datasets` mixture is given.
        dataset_config (`str`, *optional*):
            Dataset configuration name (hub datasets).
        dataset_train_split (`str`, *optional*, defaults to `"train"`):
            Split of the prompts, and of `--human_dataset_name`, to use.
        dataset_test_split (`str`, *optional*, defaults to `"test"`):
            Split of `--human_dataset_name` the student is evaluated on, if it has one.
        max_samples (`int`, *optional*):
            Use only the first prompts.
        policy_name_or_path (`str`):
            The causal LM to sample from (required).
        policy_load_in_4bit (`bool`, *optional*, defaults to `False`):
            Load the policy in 4-bit (nf4) with bitsandbytes.
        policy_load_in_8bit (`bool`, *optional*, defaults to `False`):
            Load the policy in 8-bit with bitsandbytes.
        reward_model_name_or_path (`str`, *optional*):
            The base preference model as a sequence-classification reward model (or give a judge).
        train_student (`bool`, *optional*, defaults to `False`):
            Train the student reward model (`--model_name_or_path`) on `--human_dataset_name` mixed 1:1 with the pairs.
        human_dataset_name (`str`, *optional*):
            Labeled pairs (`prompt`/`chosen`/`rejected`) for the student; its test split, if any, is evaluated.
    """

    dataset_name: str | None = field(default=None, metadata={"help": "The prompts (hub id, file or folder)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name (hub)."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split of the prompts and human pairs."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split of the human pairs to evaluate on."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first prompts."})
    policy_name_or_path: str | None = field(default=None, metadata={"help": "Causal LM to sample from (required)."})
    policy_load_in_4bit: bool = field(default=False, metadata={"help": "Load the policy in 4-bit (nf4)."})
    policy_load_in_8bit: bool = field(default=False, metadata={"help": "Load the policy in 8-bit."})
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base preference model: a sequence-classification reward model."}
    )
    train_student: bool = field(default=False, metadata={"help": "Also train the student reward model."})
    human_dataset_name: str | None = field(
        default=None, metadata={"help": "Labeled prompt/chosen/rejected pairs mixed 1:1 with the West-of-N pairs."}
    )

    def __post_init__(self):
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"--max_samples must be >= 1, got {self.max_samples}.")


def load_prompts(script_args: WestOfNScriptArguments, dataset_args: DatasetMixtureConfig | None = None):
    from trl.data_utils import maybe_extract_prompt

    from ..data_utils import row_error

    reject_unsupported_mixture_flags(dataset_args, "trl-won west-of-n")
    dataset = load_script_dataset(script_args.dataset_name, script_args.dataset_config, dataset_args)
    source = dataset_source(script_args.dataset_name, dataset_args)
    prompts = select_split(dataset, script_args.dataset_train_split, source)
    if "prompt" not in prompts.column_names:
        if "chosen" not in prompts.column_names:
            raise row_error(
                None,
                "prompt",
                f"{source} has no 'prompt' column (it has {prompts.column_names})",
                "give prompts, or chosen/rejected conversations to take them from",
            )
        prompts = prompts.map(maybe_extract_prompt)
    prompts = prompts.select_columns(["prompt"])
    if script_args.max_samples is not None:
        prompts = prompts.select(range(min(script_args.max_samples, len(prompts))))
    return prompts


def base_preference_model(script_args: WestOfNScriptArguments, judge_args: JudgeArguments) -> dict:
    """The base preference model as `WestOfNGenerator` keyword arguments."""
    judge = make_judge(judge_args, required=False)
    reward_model = check_model_path(script_args.reward_model_name_or_path, "--reward_model_name_or_path")
    if reward_model is not None and judge is not None:
        raise UsageError("Give one base preference model: --reward_model_name_or_path or --judge_model_name_or_path.")
    if judge is not None:
        return {"judge": judge}
    if reward_model is None:
        raise UsageError(NO_BASE_MODEL)
    return {"reward_model": reward_model}


NO_BASE_MODEL = (
    "A base preference model is required: --reward_model_name_or_path (a sequence-classification reward model) or "
    "--judge_model_name_or_path (an LLM judge)."
)


def main(
    script_args: WestOfNScriptArguments,
    judge_args: JudgeArguments,
    won_args: WestOfNConfig,
    reward_args: StudentRewardConfig,
    model_args: ModelConfig,
    dataset_args: DatasetMixtureConfig | None = None,
):
    """Generate the pairs (resumably, in `won_args.pairs_dir`), then optionally train the student."""
    reject_unsupported_mixture_flags(dataset_args, "trl-won west-of-n")
    student_flag = script_args.train_student
    judge = judge_args.judge_model_name_or_path
    check_required(  # every missing input named at once, before anything is loaded
        (bool(script_args.policy_name_or_path), required("--policy_name_or_path", "the causal LM to sample from")),
        (has_dataset(script_args.dataset_name, dataset_args), NO_DATASET),
        (judge is not None or script_args.reward_model_name_or_path is not None, NO_BASE_MODEL),
        (judge is not None or judge_args.judge_base_url is None, JUDGE_NAME_FOR_URL),
        (
            not student_flag or bool(script_args.human_dataset_name),
            required("--human_dataset_name", "--train_student mixes these labeled pairs"),
        ),
        (
            not student_flag or bool(model_args.model_name_or_path),
            required("--model_name_or_path", "the student reward model to train"),
        ),
    )
    from trl import RewardTrainer, get_peft_config, get_quantization_config
    from trl.data_utils import maybe_extract_prompt

    from ..models import restore_adapter_dtypes
    from ..west_of_n import WestOfNGenerator, mix_preference_datasets

    policy = check_model_path(script_args.policy_name_or_path, "--policy_name_or_path")
    human = student = None
    if script_args.train_student:  # check everything the student needs before spending time on generation
        student = check_model_path(model_args.model_name_or_path, "--model_name_or_path")
        human = load_dataset_dict(script_args.human_dataset_name, script_args.dataset_config)
        select_split(
            human, script_args.dataset_train_split, f"--human_dataset_name {script_args.human_dataset_name!r}"
        )
    else:  # the student's flags would do nothing (and --load_in_4bit is not the policy's: --policy_load_in_4bit is)
        reject("--human_dataset_name", script_args.human_dataset_name, None, "is for the student: add --train_student")
        defaults = ModelConfig()
        for name in (f.name for f in fields(ModelConfig)):
            why = "configures the student (TRL's ModelConfig): add --train_student (the policy's are --policy_*)"
            reject(f"--{name}", getattr(model_args, name), getattr(defaults, name), why)
    prompts = load_prompts(script_args, dataset_args)
    preference_model = base_preference_model(script_args, judge_args)
    generator = WestOfNGenerator(
        policy,
        won_args,
        quantization_config=bnb_config(script_args.policy_load_in_4bit, script_args.policy_load_in_8bit, "policy"),
        **preference_model,
    )
    pairs = generator.generate(prompts)  # a judge that cannot label raises JudgeError: one line, exit 1
    print(f"West-of-N: {generator.summary}")
    print(f"{len(pairs)} pairs written to {won_args.pairs_dir}")
    summary = generator.summary or {}
    check_produced(
        len(pairs),
        "West-of-N pairs",
        f"{len(prompts)} prompts, {summary.get('pairs_formed')} pairs formed, {summary.get('removed_by_confidence')} "
        f"removed by the confidence filter, {summary.get('removed_by_likelihood')} by the likelihood filter; check "
        "the base preference model and the filters (--confidence_quantile, --confidence_threshold, --min_logp).",
    )
    if not script_args.train_student:
        return pairs

    labeled = human[script_args.dataset_train_split].map(maybe_extract_prompt)
    reward_args.model_init_kwargs = {"dtype": model_args.dtype, **(reward_args.model_init_kwargs or {})}
    trainer = RewardTrainer(
        model=student,
        args=reward_args,
        train_dataset=mix_preference_datasets(labeled.select_columns(["prompt", "chosen", "rejected"]), pairs),
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    # RewardTrainer casts a 4-bit student's LoRA and score weights to bfloat16 even without bf16 (the CPU default),
    # where the float32 activations then meet a bfloat16 score head: back to the dtypes PEFT gave them.
    restore_adapter_dtypes(trainer.model, reward_args)
    trainer.train()
    if script_args.dataset_test_split in human:
        test = human[script_args.dataset_test_split].map(maybe_extract_prompt)
        trainer.accelerator.print(trainer.evaluate(test.select_columns(["prompt", "chosen", "rejected"])))
    trainer.save_model(reward_args.output_dir)
    trainer.accelerator.print(f"Student reward model saved to {reward_args.output_dir}")
    return pairs


def make_parser(prog: str | None = None) -> TrlParser:
    import torch

    parser = TrlParser(
        (
            WestOfNScriptArguments,
            JudgeArguments,
            WestOfNConfig,
            StudentRewardConfig,
            ModelConfig,
            DatasetMixtureConfig,
        ),
        prog=prog,
        description="Generate West-of-N preference pairs (best and worst of N policy samples, as ranked by a base "
        "preference model), resumably, and optionally train the student reward model on human pairs mixed 1:1 with "
        "them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hide_unsupported_mixture_flags(parser)
    defaults = {"output_dir": "west-of-n-student", "save_strategy": "no"}
    if not torch.cuda.is_available():
        defaults.update(bf16=False)  # TRL's RewardConfig defaults to bf16, which needs a GPU
    parser.set_defaults(**defaults)
    add_checkpointing_off_flags(parser)
    return parser

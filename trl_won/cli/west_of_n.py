"""`trl-won west-of-n`: generate West-of-N preference pairs from prompts, and optionally train the student RM."""

import argparse
import os
import tempfile
from dataclasses import dataclass, field

import torch
from transformers import BitsAndBytesConfig
from trl import (
    ModelConfig,
    RewardConfig,
    RewardTrainer,
    ScriptArguments,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)
from trl.data_utils import maybe_extract_prompt

from ..dataset_loading import load_dataset_dict, load_split
from ..rlaif import JudgeError, OpenAIJudge, TransformersJudge
from ..tiny import build_tiny_models, toy_preference_dataset, toy_prompt_dataset
from ..west_of_n import WestOfNConfig, WestOfNGenerator, mix_preference_datasets


EXAMPLES = """examples:
  # tiny local policy and reward model on toy prompts (CPU, under a minute)
  trl-won west-of-n --pairs_dir won-pairs

  # 16 samples per prompt from a policy, labeled by your base reward model, keeping the more confident half
  trl-won west-of-n --policy_name_or_path Qwen/Qwen2.5-1.5B-Instruct --reward_model_name_or_path my-org/base-rm \\
      --dataset_name prompts.jsonl --n 16 --confidence_quantile 0.5 --pairs_dir won-pairs

  # then train the student reward model on human pairs mixed 1:1 with the West-of-N pairs (LoRA, 4-bit)
  trl-won west-of-n --policy_name_or_path Qwen/Qwen2.5-1.5B-Instruct --reward_model_name_or_path my-org/base-rm \\
      --dataset_name prompts.jsonl --pairs_dir won-pairs --train_student --human_dataset_name human-pairs.jsonl \\
      --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --use_peft --lora_task_type SEQ_CLS --load_in_4bit \\
      --output_dir student-rm

  # an LLM judge as the base preference model (best and worst by knockout tournaments), served by vLLM
  trl-won west-of-n --policy_name_or_path Qwen/Qwen2.5-1.5B-Instruct \\
      --judge_model_name_or_path Qwen/Qwen2.5-7B-Instruct --judge_base_url http://localhost:8000/v1 \\
      --dataset_name prompts.jsonl --pairs_dir won-pairs

  # several processes split the prompts; rerunning resumes in --pairs_dir
  accelerate launch --num_processes 8 -m trl_won west-of-n --config west_of_n.yaml
"""


@dataclass
class WestOfNScriptArguments(ScriptArguments):
    """Script arguments of `trl-won west-of-n`. `--dataset_name` holds the prompts (a `prompt` column, or
    `chosen`/`rejected` conversations the prompt is extracted from); `ModelConfig` describes the student reward model.

    Args:
        policy_name_or_path (`str`, *optional*):
            The causal LM to sample from. Defaults to a tiny local model.
        policy_load_in_4bit (`bool`, *optional*, defaults to `False`):
            Load the policy in 4-bit (nf4) with bitsandbytes.
        policy_load_in_8bit (`bool`, *optional*, defaults to `False`):
            Load the policy in 8-bit with bitsandbytes.
        reward_model_name_or_path (`str`, *optional*):
            The base preference model as a sequence-classification reward model.
        judge_model_name_or_path (`str`, *optional*):
            The base preference model as an LLM judge: a local path/hub id, or the served model's name with
            `--judge_base_url`.
        judge_base_url (`str`, *optional*):
            Root of an OpenAI-compatible API serving the judge.
        judge_template (`str`, *optional*, defaults to `"helpfulness"`):
            The judge's preamble: `summarization`, `helpfulness` or `harmlessness`.
        max_prompts (`int`, *optional*):
            Use only the first prompts.
        train_student (`bool`, *optional*, defaults to `False`):
            Train the student reward model (`--model_name_or_path`) on `--human_dataset_name` mixed 1:1 with the pairs.
        human_dataset_name (`str`, *optional*):
            Labeled pairs (`prompt`/`chosen`/`rejected`) for the student; its test split, if any, is evaluated.
    """

    policy_name_or_path: str | None = field(default=None, metadata={"help": "Causal LM to sample from."})
    policy_load_in_4bit: bool = field(default=False, metadata={"help": "Load the policy in 4-bit (nf4)."})
    policy_load_in_8bit: bool = field(default=False, metadata={"help": "Load the policy in 8-bit."})
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base preference model: a sequence-classification reward model."}
    )
    judge_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Base preference model: an LLM judge (local, or served with --judge_base_url)."},
    )
    judge_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible API serving the judge."})
    judge_template: str = field(
        default="helpfulness", metadata={"help": "Judge preamble: summarization, helpfulness or harmlessness."}
    )
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first prompts."})
    train_student: bool = field(default=False, metadata={"help": "Also train the student reward model."})
    human_dataset_name: str | None = field(
        default=None, metadata={"help": "Labeled prompt/chosen/rejected pairs mixed 1:1 with the West-of-N pairs."}
    )


def load_prompts(script_args: WestOfNScriptArguments):
    if script_args.dataset_name is None:
        prompts = toy_prompt_dataset()
    else:
        prompts = load_split(script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config)
        if "prompt" not in prompts.column_names:
            if "chosen" not in prompts.column_names:
                raise ValueError(
                    f"--dataset_name {script_args.dataset_name!r} has no 'prompt' column (it has "
                    f"{prompts.column_names}); give prompts, or chosen/rejected conversations to take them from."
                )
            prompts = prompts.map(maybe_extract_prompt)
        prompts = prompts.select_columns(["prompt"])
    if script_args.max_prompts is not None:
        prompts = prompts.select(range(min(script_args.max_prompts, len(prompts))))
    return prompts


def base_preference_model(script_args: WestOfNScriptArguments, tiny) -> dict:
    """The base preference model as `WestOfNGenerator` keyword arguments."""
    if script_args.reward_model_name_or_path and script_args.judge_model_name_or_path:
        raise ValueError("Give one base preference model: --reward_model_name_or_path or --judge_model_name_or_path.")
    if script_args.judge_model_name_or_path is not None:
        if script_args.judge_base_url is not None:
            judge = OpenAIJudge(
                script_args.judge_model_name_or_path,
                base_url=script_args.judge_base_url,
                template=script_args.judge_template,
            )
        else:
            judge = TransformersJudge(script_args.judge_model_name_or_path, template=script_args.judge_template)
        return {"judge": judge}
    if script_args.judge_base_url is not None:
        raise ValueError("--judge_base_url needs --judge_model_name_or_path (the model name the server knows).")
    reward_model = script_args.reward_model_name_or_path
    if reward_model is None:
        if tiny is None:
            raise ValueError(
                "Give a base preference model: --reward_model_name_or_path or --judge_model_name_or_path."
            )
        reward_model = tiny.reward_model
    return {"reward_model": reward_model}


def policy_quantization(script_args: WestOfNScriptArguments) -> BitsAndBytesConfig | None:
    if script_args.policy_load_in_4bit and script_args.policy_load_in_8bit:
        raise ValueError("Give at most one of --policy_load_in_4bit and --policy_load_in_8bit.")
    if script_args.policy_load_in_4bit:
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    if script_args.policy_load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def main(script_args, won_args: WestOfNConfig, reward_args: RewardConfig, model_args: ModelConfig):
    """Generate the pairs (resumably, in `won_args.pairs_dir`), then optionally train the student."""
    tiny = None
    if script_args.policy_name_or_path is None:
        tiny = build_tiny_models(os.path.join(tempfile.gettempdir(), "trl_won_tiny"))
        script_args.policy_name_or_path = tiny.policy
        print(f"No --policy_name_or_path given: using the tiny local policy in {tiny.policy}")
    prompts = load_prompts(script_args)
    generator = WestOfNGenerator(
        script_args.policy_name_or_path,
        won_args,
        quantization_config=policy_quantization(script_args),
        **base_preference_model(script_args, tiny),
    )
    try:
        pairs = generator.generate(prompts)
    except JudgeError as error:  # a judge that cannot label: fail (exit 1) with the server's reason, no traceback
        raise SystemExit(f"trl-won west-of-n: error: {error}") from None
    print(f"West-of-N: {generator.summary}")
    print(f"{len(pairs)} pairs written to {won_args.pairs_dir}")
    if not script_args.train_student:
        return pairs

    if script_args.human_dataset_name is None:
        if tiny is None:
            raise ValueError("--train_student needs --human_dataset_name: the labeled pairs to mix with these.")
        human = {"train": toy_preference_dataset()}
    else:
        human = load_dataset_dict(script_args.human_dataset_name, script_args.dataset_config)
    labeled = human[script_args.dataset_train_split].map(maybe_extract_prompt)
    student = model_args.model_name_or_path or script_args.reward_model_name_or_path or (tiny and tiny.reward_model)
    if student is None:
        raise ValueError("--train_student needs --model_name_or_path: the reward model to train.")
    reward_args.model_init_kwargs = {"dtype": model_args.dtype, **(reward_args.model_init_kwargs or {})}
    trainer = RewardTrainer(
        model=student,
        args=reward_args,
        train_dataset=mix_preference_datasets(labeled.select_columns(["prompt", "chosen", "rejected"]), pairs),
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    if script_args.dataset_test_split in human:
        test = human[script_args.dataset_test_split].map(maybe_extract_prompt)
        trainer.accelerator.print(trainer.evaluate(test.select_columns(["prompt", "chosen", "rejected"])))
    trainer.save_model(reward_args.output_dir)
    trainer.accelerator.print(f"Student reward model saved to {reward_args.output_dir}")
    return pairs


def make_parser(prog: str | None = None) -> TrlParser:
    parser = TrlParser(
        (WestOfNScriptArguments, WestOfNConfig, RewardConfig, ModelConfig),
        prog=prog,
        description="Generate West-of-N preference pairs (best and worst of N policy samples, as ranked by a base "
        "preference model), resumably, and optionally train the student reward model on human pairs mixed 1:1 with "
        "them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = {"output_dir": "west-of-n-student", "save_strategy": "no"}
    if not torch.cuda.is_available():
        defaults.update(bf16=False)  # TRL's RewardConfig defaults to bf16, which needs a GPU
    parser.set_defaults(**defaults)
    return parser

"""`trl-won label`: label preference pairs with an AI judge (RLAIF), local or OpenAI-compatible.

The script behind `examples/rlaif_label.py`. Labels go to `{output_dir}/labels.sqlite` as they arrive, so a rerun after
a crash or Ctrl-C asks the judge only for pairs not labeled yet; the labeled dataset goes to
`{output_dir}/preferences.jsonl`.
"""

import argparse
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field

from trl import ModelConfig, TrlParser, get_quantization_config

from ..dataset_loading import load_dataset_dict
from ..rlaif import JudgeError, LabelStore, OpenAIJudge, TransformersJudge, label_preferences, labeler_alignment
from ..tiny import build_tiny_models, toy_preference_dataset, toy_ranking_dataset


EXAMPLES = """examples:
  # tiny local judge on toy pairs (CPU, seconds; the labels are noise, the point is the pipeline)
  trl-won label --output_dir rlaif-labels

  # a local judge in 4-bit on one GPU, with its agreement with human labels
  trl-won label --model_name_or_path Qwen/Qwen2.5-7B-Instruct --use_chat_template --load_in_4bit --dtype bfloat16 \\
      --dataset_name pairs.jsonl --template helpfulness \\
      --alignment_dataset trl-lib/ultrafeedback_binarized --alignment_split test --alignment_samples 500

  # a judge served by vLLM (or TGI, llama.cpp, OpenAI with OPENAI_API_KEY set)
  vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000
  trl-won label --model_name_or_path Qwen/Qwen2.5-7B-Instruct --judge_base_url http://localhost:8000/v1 \\
      --dataset_name pairs.jsonl --max_concurrency 64
"""


@dataclass
class LabelArguments:
    """Arguments of `trl-won label` (the judge model itself is `--model_name_or_path`, with TRL's `ModelConfig` flags
    such as `--load_in_4bit` and `--dtype`).

    Args:
        judge_base_url (`str`, *optional*):
            Root of an OpenAI-compatible API (e.g. `http://localhost:8000/v1` for vLLM); the judge runs there.
        api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`):
            Environment variable holding the API key (not needed for local servers).
        template (`str`, *optional*, defaults to `"helpfulness"`):
            `summarization`, `helpfulness` or `harmlessness`.
        chain_of_thought (`bool`, *optional*, defaults to `False`):
            Let the judge write a rationale before answering.
        use_chat_template (`bool`, *optional*, defaults to `False`):
            Local judge: send the request through its chat template (instruct models).
        batch_size (`int`, *optional*, defaults to `16`):
            Local judge: sequences per forward pass.
        max_length (`int`, *optional*):
            Local judge: longest judge prompt in tokens.
        max_concurrency (`int`, *optional*, defaults to `32`):
            Server judge: requests in flight.
        requests_per_second (`float`, *optional*):
            Server judge: request-rate limit.
        dataset_name (`str`, *optional*):
            Pairs to label: a hub id, a `.json`/`.jsonl`/`.parquet`/`.csv` file or a saved dataset. Defaults to a toy
            dataset.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split to label.
        num_samples (`int`, *optional*):
            Label only the first rows.
        min_confidence (`float`, *optional*):
            Drop pairs whose soft label is below this.
        drop_inconsistent (`bool`, *optional*, defaults to `False`):
            Drop pairs whose preference flips when the order is swapped.
        alignment_dataset (`str`, *optional*):
            A `prompt`/`chosen`/`rejected` dataset with human labels to measure the judge's alignment on.
        alignment_split (`str`, *optional*, defaults to `"test"`):
            Its split.
        alignment_samples (`int`, *optional*, defaults to `200`):
            Rows of it to use.
        output_dir (`str`, *optional*, defaults to `"rlaif-labels"`):
            Where the label store and the labeled dataset go.
    """

    judge_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible API root (vLLM, ...)."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable with the API key."})
    template: str = field(default="helpfulness", metadata={"help": "summarization, helpfulness or harmlessness."})
    chain_of_thought: bool = field(default=False, metadata={"help": "Judge writes a rationale first."})
    use_chat_template: bool = field(default=False, metadata={"help": "Local judge: use its chat template."})
    batch_size: int = field(default=16, metadata={"help": "Local judge: sequences per forward pass."})
    max_length: int | None = field(default=None, metadata={"help": "Local judge: longest prompt in tokens."})
    max_concurrency: int = field(default=32, metadata={"help": "Server judge: requests in flight."})
    requests_per_second: float | None = field(default=None, metadata={"help": "Server judge: rate limit."})
    dataset_name: str | None = field(default=None, metadata={"help": "Pairs to label (hub id, file or folder)."})
    dataset_split: str = field(default="train", metadata={"help": "Split to label."})
    num_samples: int | None = field(default=None, metadata={"help": "Label only the first rows."})
    min_confidence: float | None = field(default=None, metadata={"help": "Drop pairs with lower soft labels."})
    drop_inconsistent: bool = field(default=False, metadata={"help": "Drop position-inconsistent pairs."})
    alignment_dataset: str | None = field(default=None, metadata={"help": "Human-labeled prompt/chosen/rejected."})
    alignment_split: str = field(default="test", metadata={"help": "Split of the alignment dataset."})
    alignment_samples: int = field(default=200, metadata={"help": "Rows of the alignment dataset."})
    output_dir: str = field(default="rlaif-labels", metadata={"help": "Where the store and dataset go."})


def make_judge(args: LabelArguments, model_args: ModelConfig):
    """The judge the arguments describe: served (`--judge_base_url`) or local (`--model_name_or_path`)."""
    if args.judge_base_url is not None:
        if model_args.model_name_or_path is None:
            raise ValueError("With --judge_base_url, give --model_name_or_path: the model name the server knows.")
        return OpenAIJudge(
            model_args.model_name_or_path,
            base_url=args.judge_base_url,
            template=args.template,
            api_key_env=args.api_key_env,
            chain_of_thought=args.chain_of_thought,
            max_concurrency=args.max_concurrency,
            requests_per_second=args.requests_per_second,
        )
    model = model_args.model_name_or_path
    if model is None:
        model = build_tiny_models(os.path.join(tempfile.gettempdir(), "trl_won_tiny")).policy
        print(f"No --model_name_or_path given: using the tiny local judge in {model}")
    init_kwargs = {"revision": model_args.model_revision}
    if model_args.dtype is not None:
        init_kwargs["dtype"] = model_args.dtype
    if model_args.attn_implementation is not None:
        init_kwargs["attn_implementation"] = model_args.attn_implementation
    return TransformersJudge(
        model,
        template=args.template,
        chain_of_thought=args.chain_of_thought,
        use_chat_template=args.use_chat_template,
        batch_size=args.batch_size,
        max_length=args.max_length,
        quantization_config=get_quantization_config(model_args),
        model_init_kwargs=init_kwargs,
    )


def main(args: LabelArguments, model_args: ModelConfig) -> dict:
    """Label the dataset, write `preferences.jsonl` and the label store to `output_dir`, return a summary. Exits with
    status 1 when the judge cannot label (no server, a refused request, no answer for any pair)."""
    try:
        return _label(args, model_args)
    except JudgeError as error:  # the server's reason, scrubbed, without a traceback
        raise SystemExit(f"trl-won label: error: {error}") from None


def _label(args: LabelArguments, model_args: ModelConfig) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.makedirs(args.output_dir, exist_ok=True)
    judge = make_judge(args, model_args)
    store = LabelStore(os.path.join(args.output_dir, "labels.sqlite"))
    if args.dataset_name is None:
        pairs = toy_ranking_dataset(with_rewards=False)
    else:
        pairs = load_dataset_dict(args.dataset_name)[args.dataset_split]
    if args.num_samples is not None:
        pairs = pairs.select(range(min(args.num_samples, len(pairs))))

    labeled = label_preferences(
        pairs, judge, store=store, min_confidence=args.min_confidence, drop_inconsistent=args.drop_inconsistent
    )
    path = os.path.join(args.output_dir, "preferences.jsonl")
    labeled.to_json(path)
    summary = {
        "pairs": len(labeled),
        "mean_soft_label": sum(labeled["soft_label"]) / max(1, len(labeled)),
        "position_consistency": sum(bool(c) for c in labeled["position_consistent"]) / max(1, len(labeled)),
        "stored_labels": store.count(judge.fingerprint),
    }
    if args.alignment_dataset is not None or args.dataset_name is None:
        if args.alignment_dataset is None:
            gold = toy_preference_dataset()
        else:
            gold = load_dataset_dict(args.alignment_dataset)[args.alignment_split]
            gold = gold.select(range(min(args.alignment_samples, len(gold))))
        summary["alignment"] = labeler_alignment(gold, judge, store=store).as_dict()
    if hasattr(judge, "stats"):
        summary["requests"] = judge.stats.as_dict()
    print(json.dumps(summary, indent=2))
    print(f"Labeled preference dataset written to {path}")
    return summary


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser(
        (LabelArguments, ModelConfig),
        prog=prog,
        description="Label preference pairs with an LLM judge (RLAIF) and write a TRL preference dataset with soft "
        "labels. Rows are (prompt, completion_a, completion_b) or (prompt, completions).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

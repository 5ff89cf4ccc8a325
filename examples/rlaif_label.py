"""Label preference pairs with an AI judge (RLAIF) and write a TRL preference dataset with soft labels.

Runs as is with a tiny local judge (CPU, seconds; its labels are noise, the point is the pipeline):

```bash
python examples/rlaif_label.py
```

With a real local judge model (4-bit on one GPU), on your pairs (`prompt` + `completion_a`/`completion_b`, or
`prompt` + `completions`), measuring its agreement with human labels on a `prompt`/`chosen`/`rejected` dataset:

```bash
python examples/rlaif_label.py \
    --model_name_or_path Qwen/Qwen2.5-7B-Instruct --use_chat_template --load_in_4bit --dtype bfloat16 \
    --dataset_name your/pairs.jsonl --template helpfulness \
    --alignment_dataset trl-lib/ultrafeedback_binarized --alignment_split test --alignment_samples 500 \
    --output_dir rlaif-labels
```

With a judge served by vLLM (or TGI, llama.cpp, OpenAI): start the server, then point the script at it.

```bash
vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000
python examples/rlaif_label.py --model_name_or_path Qwen/Qwen2.5-7B-Instruct \
    --judge_base_url http://localhost:8000/v1 --dataset_name your/pairs.jsonl --max_concurrency 64 \
    --output_dir rlaif-labels
```

Labels go to `{output_dir}/labels.sqlite` as they arrive: rerunning after a crash or Ctrl-C asks the judge only for
pairs not labeled yet. The labeled dataset is written to `{output_dir}/preferences.jsonl`; train a reward model on it
with `RLAIFRewardTrainer`, or DPO with TRL's `DPOTrainer`. The logic lives in `trl_won/cli/label.py` (also
`trl-won label`).
"""

from trl import ModelConfig, TrlParser

from trl_won.cli.label import LabelArguments, main


if __name__ == "__main__":
    arguments, model_arguments = TrlParser((LabelArguments, ModelConfig)).parse_args_and_config()
    main(arguments, model_arguments)

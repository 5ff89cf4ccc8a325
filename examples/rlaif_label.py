"""Label preference pairs with an AI judge (RLAIF) and write a TRL preference dataset with soft labels.

The logic lives in `trl_won/cli/label.py`; this script is `trl-won label` with one difference: without `--output_dir`
it writes under the system's temporary directory, never into the checkout. The pairs are
`prompt` + `completion_a`/`completion_b`, or `prompt` + `completions`. With a local judge model, measuring its
agreement with human labels on a `prompt`/`chosen`/`rejected` dataset:

```bash
python examples/rlaif_label.py --judge_model_name_or_path Qwen/Qwen2.5-7B-Instruct --judge_use_chat_template \
    --dataset_name pairs.jsonl --judge_template helpfulness \
    --alignment_dataset trl-lib/ultrafeedback_binarized --alignment_split test --alignment_samples 500 \
    --output_dir rlaif-labels
```

(add `--judge_load_in_4bit --judge_dtype bfloat16` on one GPU). With a judge served by vLLM (or TGI, llama.cpp,
OpenAI): start the server (`vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000`), then point the script at it.

```bash
python examples/rlaif_label.py --judge_model_name_or_path Qwen/Qwen2.5-7B-Instruct \
    --judge_base_url http://localhost:8000/v1 --dataset_name pairs.jsonl --judge_max_concurrency 64 \
    --output_dir rlaif-labels-served
```

Labels go to `{output_dir}/labels.sqlite` as they arrive: rerunning after a crash or Ctrl-C asks the judge only for
pairs not labeled yet. The labeled dataset is written to `{output_dir}/preferences.jsonl`; train a reward model on it
with `RLAIFRewardTrainer`, or DPO with TRL's `DPOTrainer`.
"""

import os
import sys
import tempfile

from trl_won.cli.main import run


if __name__ == "__main__":
    output_dir = os.path.join(tempfile.gettempdir(), "trl_won_examples", "rlaif-labels")
    raise SystemExit(run("label", sys.argv[1:], prog="examples/rlaif_label.py", defaults={"output_dir": output_dir}))

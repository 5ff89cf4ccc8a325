"""The stages of `benchmarks/gpu_check.sh`: one RRHF / West-of-N run each, on one CUDA GPU, printing its figures.

    python benchmarks/gpu_check.py --stage offline|online|qlora|vllm_online|won_vllm [--cpu-dry-run] [--work DIR]

Each stage builds what it needs from code (no download): a randomly initialised model of Qwen2.5-0.5B's shape (its
config written here: 24 layers, hidden 896, 14 heads / 2 KV heads, vocabulary 151,936, tied embeddings) saved to
`--work`, with Qwen2's tokenizer from `../shared/tokenizers/qwen2` (`TRL_WON_SHARED_DIR` overrides `../shared`) or,
when that is absent, the reduced Qwen2 tokenizer of `tests/fixtures/tokenizers/qwen2`, the vocabulary then cut to the
tokenizer's size (printed) so that a random model cannot sample ids the tokenizer cannot decode.

The figures: training tokens per second (completion tokens trained on, `num_tokens` / train runtime), prompts per
second, generated tokens per second for the sampling stages, and the peak GPU memory (`max_memory_allocated`).

`--cpu-dry-run` runs the same code on the CPU with a tiny model (2 layers, hidden 64) in float32, so the script's own
logic is checked on a machine without a GPU; the stages that need CUDA (4-bit bitsandbytes, vLLM) print why they are
skipped and exit 3. A stage that fails exits 1.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
SKIPPED = 3  # the exit status of a stage skipped in a dry run
STAGES = ["offline", "online", "qlora", "vllm_online", "won_vllm"]
NEEDS_CUDA = {
    "qlora": "4-bit QLoRA needs CUDA bitsandbytes",
    "vllm_online": "vLLM needs a GPU",
    "won_vllm": "vLLM needs a GPU",
}

# Qwen2.5-0.5B's config (as published), built locally.
QWEN25_05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
)
TINY = dict(QWEN25_05B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Summarize the following text in one sentence.",
    "How do I bake bread? Mix flour, water, salt and yeast.",
    "What is the capital of France? Paris is the capital of France.",
    "Write a short poem about the sea.",
    "Tell me a story about a robot who learns to paint.",
]


def length_reward(completions, **kwargs):
    """A reward function with GRPO's signature: longer completions score higher (enough to rank)."""
    return [float(len(c if isinstance(c, str) else c[-1]["content"])) for c in completions]


def tokenizer_path() -> tuple[Path, str]:
    shared = Path(os.environ.get("TRL_WON_SHARED_DIR", REPO.parent / "shared")) / "tokenizers" / "qwen2"
    if (shared / "tokenizer.json").exists():
        return shared, "full Qwen2 tokenizer (../shared)"
    return REPO / "tests/fixtures/tokenizers/qwen2", "reduced Qwen2 tokenizer (tests/fixtures); vocabulary cut to it"


def build_models(work: Path, dry_run: bool) -> dict:
    """Save a random Qwen2.5-0.5B-shaped policy (and a small reward model) with their tokenizer; return paths."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    path, tokenizer_note = tokenizer_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    shape = dict(TINY if dry_run else QWEN25_05B)
    if len(tokenizer) < shape["vocab_size"] // 2:  # the reduced fixture: no ids it cannot decode
        shape["vocab_size"] = -(-len(tokenizer) // 64) * 64
    special = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    torch.manual_seed(0)
    policy = Qwen2ForCausalLM(Qwen2Config(**shape, **special))
    policy_dir = work / "policy"
    policy.save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    reward_shape = dict(shape, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
    reward_model = Qwen2ForSequenceClassification(Qwen2Config(**reward_shape, **special, num_labels=1))
    reward_dir = work / "reward_model"
    reward_model.save_pretrained(reward_dir)
    tokenizer.save_pretrained(reward_dir)
    params = sum(p.numel() for p in policy.parameters())
    print(
        f"policy: Qwen2 {shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, vocab "
        f"{shape['vocab_size']}, {params / 1e6:.1f}M parameters; {tokenizer_note}",
        flush=True,
    )
    return {"policy": str(policy_dir), "reward_model": str(reward_dir), "tokenizer": tokenizer}


def prompts(n: int, words: int) -> list[str]:
    text = " ".join(SENTENCES * (words // 40 + 1)).split()
    return [" ".join(text[i % 7 : i % 7 + words]) for i in range(n)]


def training_args(work: Path, dry_run: bool, **overrides):
    from trl_won import RRHFConfig

    kwargs = dict(
        output_dir=str(work / "out"),
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-5,
        activation_checkpointing=not dry_run,
        bf16=not dry_run,
        use_cpu=dry_run,
        seed=0,
    )
    kwargs.update(overrides)
    return RRHFConfig(**kwargs)


def train_and_report(stage: str, trainer, num_prompts: int) -> dict:
    import torch

    cuda = torch.cuda.is_available() and not trainer.args.use_cpu
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    logs = [entry for entry in trainer.state.log_history if "num_tokens" in entry]
    tokens = logs[-1]["num_tokens"] if logs else float("nan")
    figures = {
        "stage": stage,
        "steps": trainer.state.global_step,
        "seconds": round(seconds, 2),
        "prompts_per_s": round(num_prompts / seconds, 2),
        "trained_tokens_per_s": round(tokens / seconds, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "loss": [round(entry["loss"], 4) for entry in trainer.state.log_history if "loss" in entry],
    }
    if not all(torch.isfinite(torch.tensor(figures["loss"]))):
        raise RuntimeError(f"{stage}: a non-finite loss {figures['loss']}")
    return figures


def offline_dataset(num_prompts: int, prompt_words: int, completion_words: int, k: int = 4):
    from datasets import Dataset

    rows = []
    for i, prompt in enumerate(prompts(num_prompts, prompt_words)):
        completions = [" " + " ".join(prompts(1, completion_words + 3 * j)[0].split()[j:]) for j in range(k)]
        rows.append({"prompt": prompt, "completions": completions, "rewards": [float((i + j) % k) for j in range(k)]})
    return Dataset.from_list(rows)


def stage_offline(work: Path, dry_run: bool, quantized: bool = False) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    from trl_won import RRHFTrainer

    models = build_models(work, dry_run)
    steps, batch = 3, 4
    dataset = offline_dataset(steps * batch, 48 if dry_run else 192, 16 if dry_run else 64)
    quantization_config = None
    peft_config = None
    if quantized:
        quantization_config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = RRHFTrainer(
        model=models["policy"],
        args=training_args(
            work,
            dry_run,
            max_steps=steps,
            per_device_train_batch_size=batch,
            model_init_kwargs={"dtype": "float32" if dry_run else "bfloat16"},
        ),
        train_dataset=dataset,
        processing_class=models["tokenizer"],
        quantization_config=quantization_config,
        peft_config=peft_config,
    )
    return train_and_report("qlora" if quantized else "offline", trainer, steps * batch)


def stage_online(work: Path, dry_run: bool, use_vllm: bool = False) -> dict:
    from datasets import Dataset

    from trl_won import RRHFTrainer

    models = build_models(work, dry_run)
    steps, batch, k = 3, 4, 4
    max_completion_length = 16 if dry_run else 128
    dataset = Dataset.from_dict({"prompt": prompts(steps * batch, 32 if dry_run else 128)})
    vllm = {}
    if use_vllm:
        vllm = dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3, vllm_max_model_length=1024)
    trainer = RRHFTrainer(
        model=models["policy"],
        args=training_args(
            work,
            dry_run,
            max_steps=steps,
            per_device_train_batch_size=batch,
            num_generations=k,
            max_completion_length=max_completion_length,
            temperature=1.0,
            model_init_kwargs={"dtype": "float32" if dry_run else "bfloat16"},
            **vllm,
        ),
        train_dataset=dataset,
        processing_class=models["tokenizer"],
        reward_funcs=[length_reward],
    )
    figures = train_and_report("vllm_online" if use_vllm else "online", trainer, steps * batch)
    lengths = [entry.get("completions/mean_length") for entry in trainer.state.log_history]
    lengths = [value for value in lengths if value is not None]
    if lengths:
        generated = sum(lengths) / len(lengths) * steps * batch * k
        figures["generated_tokens_per_s"] = round(generated / figures["seconds"], 1)
    return figures


def stage_won_vllm(work: Path, dry_run: bool) -> dict:
    import torch

    from trl_won import WestOfNConfig, WestOfNGenerator

    models = build_models(work, dry_run)
    num_prompts, n, max_new_tokens = 64, 16, 128
    generator = WestOfNGenerator(
        models["policy"],
        WestOfNConfig(
            n=n,
            max_new_tokens=max_new_tokens,
            temperature=1.0,
            use_vllm=True,
            vllm_gpu_memory_utilization=0.4,
            vllm_kwargs={"max_model_len": 1024},
            pairs_dir=str(work / "pairs"),
            show_progress=False,
        ),
        reward_model=models["reward_model"],
    )
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    pairs = generator.generate(prompts(num_prompts, 64))
    seconds = time.perf_counter() - start
    return {
        "stage": "won_vllm",
        "pairs": len(pairs),
        "seconds": round(seconds, 2),
        "prompts_per_s": round(num_prompts / seconds, 2),
        "sampled_sequences_per_s": round(num_prompts * n / seconds, 1),
        "peak_memory_gib (torch, outside vLLM's pool)": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=STAGES, required=True)
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny model on the CPU; CUDA/vLLM stages skip")
    parser.add_argument("--work", default=None, help="directory for the models and outputs (default: a temp dir)")
    args = parser.parse_args(argv)

    if args.cpu_dry_run and args.stage in NEEDS_CUDA:
        print(f"[{args.stage}] SKIPPED in --cpu-dry-run: {NEEDS_CUDA[args.stage]}", flush=True)
        return SKIPPED
    import tempfile

    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print(f"[{args.stage}] FAILED: no CUDA device visible to torch {torch.__version__}", flush=True)
        return 1
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        work = Path(work)
        if args.stage == "offline":
            figures = stage_offline(work, args.cpu_dry_run)
        elif args.stage == "qlora":
            figures = stage_offline(work, args.cpu_dry_run, quantized=True)
        elif args.stage == "online":
            figures = stage_online(work, args.cpu_dry_run)
        elif args.stage == "vllm_online":
            figures = stage_online(work, args.cpu_dry_run, use_vllm=True)
        else:
            figures = stage_won_vllm(work, args.cpu_dry_run)
    print(f"[{args.stage}] FIGURES {json.dumps(figures)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

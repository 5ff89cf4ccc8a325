"""Time an RRHF training step and measure its peak memory against the official RRHF code's way of computing it.

Variants, each in a fresh process (so peak memory is not shared), `--repeats` times, medians reported:

- baseline (as GanjinZero/RRHF's train.py works): one prompt per step; the k sequences go through the model, the full
  `(k, seq_len, vocab)` logits get a log-softmax over every position, then the labels' log-probs are gathered;
- `RRHFTrainer` with `share_prompt=False`: one sequence per completion, the LM head on completion tokens only, in
  chunks;
- `RRHFTrainer` with `share_prompt=True` (the default): each prompt packed once with its k completions.

Also printed: the step's minimum FLOPs (`6 x backbone parameters x (P + sum R) + 6 x head parameters x sum R` per
prompt, embeddings excluded) times prompts/s, as a fraction of this machine's matmul peak, measured in the same run
(the best of several large matmuls in the benchmark's dtype).

Peak memory: `torch.cuda.max_memory_allocated` on a GPU; on the CPU, the growth of the process's peak resident memory
during the measured steps over its resident memory before them (glibc is told to return freed blocks over 64 KiB to
the system, so that the resident memory follows the tensors alive).

```bash
python benchmarks/rrhf_step.py                          # default shape: hidden 256, 2 layers, 32k vocab (head-bound)
python benchmarks/rrhf_step.py --shape backbone         # hidden 512, 8 layers, 32k vocab, P=512, R=64, k=8
python benchmarks/rrhf_step.py --shape qwen2.5-0.5b --bf16   # Qwen2.5-0.5B's shape, on a GPU
```
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch


# name: (hidden, layers, heads, kv heads, intermediate, vocab, tied, prompt length, completion length, prompts/step,
# measured steps)
SHAPES = {
    "default": (256, 2, 4, 4, 682, 32000, False, 64, 128, 4, 4),
    "backbone": (512, 8, 8, 8, 1365, 32000, False, 512, 64, 1, 2),
    "qwen2.5-0.5b": (896, 24, 14, 2, 4864, 151936, True, 512, 64, 4, 4),
    "qwen2.5-1.5b": (1536, 28, 12, 2, 8960, 151936, True, 512, 64, 2, 4),
}
SETTINGS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "intermediate_size",
    "vocab_size",
    "tie_word_embeddings",
    "prompt_length",
    "completion_length",
    "prompts_per_step",
    "steps",
)
VARIANTS = {
    "baseline": "baseline (official code: full log-softmax, 1 prompt/step)",
    "unshared": "RRHFTrainer, share_prompt=False",
    "shared": "RRHFTrainer, share_prompt=True",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="default", help="Model and data shape preset.")
    parser.add_argument("--k", type=int, default=8, help="Completions per prompt.")
    for name in SETTINGS:
        kind = int if name != "tie_word_embeddings" else lambda value: value.lower() in ("1", "true")
        parser.add_argument(f"--{name}", type=kind, default=None, help=f"Overrides the shape's {name}.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each variant; medians are reported.")
    parser.add_argument("--bf16", action="store_true", help="Run the model in bfloat16 (GPU).")
    parser.add_argument("--logprob_chunk_size", type=int, default=None, help="RRHFConfig.logprob_chunk_size.")
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, value in zip(SETTINGS, SHAPES[args.shape], strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def build_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        num_key_value_heads=args.num_kv_heads,
        max_position_embeddings=args.prompt_length + args.completion_length + 8,
        tie_word_embeddings=args.tie_word_embeddings,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config)
    return model.to(torch.bfloat16) if args.bf16 else model


def build_rows(args, num_prompts):
    """Prompts of `prompt_length` tokens, each with k completions of `completion_length / 2 .. completion_length`."""
    generator = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(num_prompts):
        prompt = torch.randint(3, args.vocab_size, (args.prompt_length,), generator=generator).tolist()
        lengths = torch.linspace(args.completion_length // 2, args.completion_length, args.k).long().tolist()
        completions = [torch.randint(3, args.vocab_size, (n,), generator=generator).tolist() for n in lengths]
        rewards = torch.randn(args.k, generator=generator).tolist()
        rows.append({"prompt_ids": prompt, "completion_ids": completions, "rewards": rewards})
    return rows


def minimum_flops_per_prompt(args, model) -> float:
    """`6 x backbone parameters x (P + sum R) + 6 x head parameters x sum R` (embedding lookups cost no FLOPs)."""
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())  # a tied head is counted once here
    backbone = total - embedding - (0 if args.tie_word_embeddings else head)
    completion_tokens = sum(len(c) for c in build_rows(args, 1)[0]["completion_ids"])
    return 6 * backbone * (args.prompt_length + completion_tokens) + 6 * head * completion_tokens


def baseline_step(model, optimizer, row, device):
    """One prompt, the official code's way: full-vocabulary log-softmax over every position, then gather."""
    sequences = [row["prompt_ids"] + c for c in row["completion_ids"]]
    width = max(len(s) for s in sequences)
    input_ids = torch.zeros(len(sequences), width, dtype=torch.long)
    labels = torch.full((len(sequences), width), -100, dtype=torch.long)
    for i, (sequence, completion) in enumerate(zip(sequences, row["completion_ids"])):
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        labels[i, len(row["prompt_ids"]) : len(sequence)] = torch.tensor(completion)
    input_ids, labels = input_ids.to(device), labels.to(device)
    logits = model(input_ids=input_ids, attention_mask=(labels != -100) | (input_ids != 0)).logits
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = labels[:, 1:]
    mask = targets != -100
    token_logps = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    scores = token_logps.sum(-1) / mask.sum(-1)
    rewards = torch.tensor(row["rewards"], device=device)
    better = rewards.unsqueeze(0) > rewards.unsqueeze(1)
    rank = (torch.relu(scores.unsqueeze(1) - scores.unsqueeze(0)) * better).sum()
    best = int(rewards.argmax())
    loss = rank - token_logps[best].sum() / mask[best].sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def worker(args):
    from datasets import Dataset

    from trl_won import RRHFConfig, RRHFTrainer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(args).to(device)
    batch = 1 if args.variant == "baseline" else args.prompts_per_step
    rows = build_rows(args, (args.steps + 1) * batch)
    if args.variant == "baseline":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(i):
            baseline_step(model, optimizer, rows[i], device)
    else:
        config = RRHFConfig(
            output_dir="/tmp/rrhf_bench",
            per_device_train_batch_size=batch,
            learning_rate=1e-5,
            report_to="none",
            bf16=False,
            activation_checkpointing=False,
            disable_tqdm=True,
            max_length=None,
            logprob_chunk_size=args.logprob_chunk_size,
            share_prompt=args.variant == "shared",
        )
        tokenizer = _stub_tokenizer()
        trainer = RRHFTrainer(model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        if trainer._share_prompt != (args.variant == "shared"):
            raise RuntimeError("prompt sharing fell back; the measurement would not be of the shared path")
        trainer.create_optimizer()
        collator = trainer.data_collator

        def step(i):
            inputs = collator(rows[i * batch : (i + 1) * batch])
            trainer.training_step(trainer.model, inputs, torch.tensor(batch, device=device))
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()

    step(0)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    start = time.perf_counter()
    for i in range(1, args.steps + 1):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    elapsed = time.perf_counter() - start
    print(json.dumps({"prompts_per_second": args.steps * batch / elapsed, "peak_bytes": peak}))


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _stub_tokenizer():
    """The benchmark feeds token ids directly; the trainer only needs a pad token id from its tokenizer."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocabulary = models.WordLevel({"<pad>": 0, "<eos>": 1}, unk_token="<pad>")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(vocabulary))
    tokenizer.pad_token, tokenizer.eos_token = "<pad>", "<eos>"
    return tokenizer


def run_variant(args, variant):
    """Speed and peak memory of `variant`, each from a fresh process.

    The memory run makes glibc return every freed block over 64 KiB to the system (`MALLOC_MMAP_THRESHOLD_`), so that
    the resident memory follows the tensors alive; that setting slows many mid-sized allocations (the trainer's far
    more than the baseline's few huge ones: on the default shape it halved the trainer's speed), so speed is measured
    in a separate process with the allocator's defaults.
    """

    def run(steps, extra_env):
        command = [sys.executable, __file__, "--variant", variant, "--shape", args.shape, "--k", str(args.k)]
        for name in SETTINGS:
            command += [f"--{name}", str(steps if name == "steps" else getattr(args, name))]
        if args.logprob_chunk_size is not None:
            command += ["--logprob_chunk_size", str(args.logprob_chunk_size)]
        if args.bf16:
            command.append("--bf16")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": root, **extra_env}
        output = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if output.returncode != 0:
            raise RuntimeError(f"{variant} failed:\n{output.stderr[-3000:]}")
        return json.loads(output.stdout.strip().splitlines()[-1])

    speed = run(args.steps, {})["prompts_per_second"]
    memory = run(1, {"MALLOC_MMAP_THRESHOLD_": "65536"})["peak_bytes"]
    return {"prompts_per_second": speed, "peak_bytes": memory}


def matmul_peak_flops(dtype: torch.dtype) -> float:
    """The best FLOP rate of several large square matmuls in `dtype` on this machine."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = 8192 if device == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def main():
    args = parse_args()
    if args.variant:
        return worker(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    flops = minimum_flops_per_prompt(args, build_model(args))
    print(
        f"RRHF step on {device} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}): shape {args.shape}, "
        f"k={args.k}, "
        f"hidden={args.hidden_size}, layers={args.num_layers}, vocab={args.vocab_size}, prompt={args.prompt_length}, "
        f"completions {args.completion_length // 2}-{args.completion_length} tokens, "
        f"{args.prompts_per_step} prompt(s)/step for the trainer, {args.steps} measured steps, "
        f"medians of {args.repeats} runs"
    )
    runs = {variant: [] for variant in VARIANTS}
    peaks = []
    for repeat in range(args.repeats):
        peaks.append(matmul_peak_flops(dtype))
        for variant in VARIANTS:
            runs[variant].append(run_variant(args, variant))
        speeds = {v: runs[v][-1]["prompts_per_second"] for v in VARIANTS}
        print(
            f"run {repeat + 1}: "
            + ", ".join(f"{v} {speeds[v]:.3f} prompts/s" for v in VARIANTS)
            + f"; shared/baseline {speeds['shared'] / speeds['baseline']:.2f}x, "
            f"shared/unshared {speeds['shared'] / speeds['unshared']:.2f}x",
            flush=True,
        )
    peak = statistics.median(peaks)
    print(f"matmul peak ({dtype}, median of {args.repeats}): {peak / 1e9:.1f} GFLOP/s")
    print(f"minimum FLOPs per prompt: {flops / 1e9:.1f} GFLOP")
    median = {
        v: {key: statistics.median(r[key] for r in runs[v]) for key in ("prompts_per_second", "peak_bytes")}
        for v in VARIANTS
    }
    base, unshared = median["baseline"], median["unshared"]
    header = f"{'variant':<58} {'prompts/s':>10} {'x base':>7} {'x off':>6} {'peak MiB':>9} {'x base':>7} {'x off':>6}"
    print(header + f" {'GFLOP/s':>8} {'of peak':>8}")
    for variant, name in VARIANTS.items():
        result = median[variant]
        speed = result["prompts_per_second"]
        memory = result["peak_bytes"]
        achieved = flops * speed
        print(
            f"{name:<58} {speed:>10.3f} {speed / base['prompts_per_second']:>7.2f} "
            f"{speed / unshared['prompts_per_second']:>6.2f} {memory / 2**20:>9.0f} "
            f"{memory / base['peak_bytes']:>7.2f} {memory / unshared['peak_bytes']:>6.2f} "
            f"{achieved / 1e9:>8.1f} {achieved / peak:>8.1%}"
        )


if __name__ == "__main__":
    main()

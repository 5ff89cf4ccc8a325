"""Time an RRHF training step and measure its peak memory against the official RRHF code's way of computing it.

Baseline (as GanjinZero/RRHF's train.py works): one prompt per step; the k sequences go through the model, the full
`(k, seq_len, vocab)` logits get a log-softmax over every position, then the labels' log-probs are gathered.
Ours: `RRHFTrainer.training_step` (LM head applied to completion tokens only, in chunks), with 1 and with several
prompts per step. Same model (vocabulary >= 32k, since the vocabulary dominates memory), same token ids, same
optimizer; every variant runs in a fresh process so peak memory is not shared.

Peak memory: `torch.cuda.max_memory_allocated` on a GPU; on the CPU, the growth of the process's peak resident memory
during the measured steps over its resident memory before them.

```bash
python benchmarks/rrhf_step.py                 # k=8, vocab 32000, CPU or GPU
python benchmarks/rrhf_step.py --k 8 --vocab_size 128256 --hidden_size 1024 --bf16   # bigger, on a GPU
```
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=8, help="Completions per prompt.")
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--prompt_length", type=int, default=64)
    parser.add_argument("--completion_length", type=int, default=128, help="Longest completion; others are shorter.")
    parser.add_argument("--prompts_per_step", type=int, default=4, help="Batch size of the batched RRHFTrainer run.")
    parser.add_argument("--steps", type=int, default=4, help="Measured steps (after one warm-up step).")
    parser.add_argument("--bf16", action="store_true", help="Run the model in bfloat16 (GPU).")
    parser.add_argument("--logprob_chunk_size", type=int, default=None, help="RRHFConfig.logprob_chunk_size.")
    parser.add_argument("--variant", choices=["baseline", "rrhf"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.hidden_size * 8 // 3,
        num_hidden_layers=args.num_layers,
        num_attention_heads=max(1, args.hidden_size // 64),
        max_position_embeddings=args.prompt_length + args.completion_length + 8,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    return model.to(torch.bfloat16) if args.bf16 else model


def build_rows(args, num_prompts):
    generator = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(num_prompts):
        prompt = torch.randint(3, args.vocab_size, (args.prompt_length,), generator=generator).tolist()
        lengths = torch.linspace(args.completion_length // 2, args.completion_length, args.k).long().tolist()
        completions = [torch.randint(3, args.vocab_size, (n,), generator=generator).tolist() for n in lengths]
        rewards = torch.randn(args.k, generator=generator).tolist()
        rows.append({"prompt_ids": prompt, "completion_ids": completions, "rewards": rewards})
    return rows


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
    rows = build_rows(args, (args.steps + 1) * args.batch)
    if args.variant == "baseline":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(i):
            baseline_step(model, optimizer, rows[i], device)
    else:
        config = RRHFConfig(
            output_dir="/tmp/rrhf_bench",
            per_device_train_batch_size=args.batch,
            learning_rate=1e-5,
            report_to="none",
            bf16=False,
            gradient_checkpointing=False,
            disable_tqdm=True,
            max_length=None,
            logprob_chunk_size=args.logprob_chunk_size,
        )
        tokenizer = _stub_tokenizer()
        trainer = RRHFTrainer(model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        trainer.create_optimizer()
        collator = trainer.data_collator

        def step(i):
            batch = collator(rows[i * args.batch : (i + 1) * args.batch])
            trainer.training_step(trainer.model, batch, torch.tensor(args.batch, device=device))
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
    print(json.dumps({"prompts_per_second": args.steps * args.batch / elapsed, "peak_bytes": peak}))


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


def run_variant(args, variant, batch):
    command = [sys.executable, __file__, "--variant", variant, "--batch", str(batch)]
    for name in ("k", "vocab_size", "hidden_size", "num_layers", "prompt_length", "completion_length", "steps"):
        command += [f"--{name}", str(getattr(args, name))]
    if args.logprob_chunk_size is not None:
        command += ["--logprob_chunk_size", str(args.logprob_chunk_size)]
    if args.bf16:
        command.append("--bf16")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    output = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if output.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main():
    args = parse_args()
    if args.variant:
        return worker(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"RRHF step on {device}: k={args.k}, vocab={args.vocab_size}, hidden={args.hidden_size}, "
        f"layers={args.num_layers}, prompt={args.prompt_length}, completions<={args.completion_length} tokens"
    )
    baseline = run_variant(args, "baseline", 1)
    results = [("baseline (official code: full log-softmax, 1 prompt/step)", baseline)]
    results.append(("RRHFTrainer, 1 prompt/step", run_variant(args, "rrhf", 1)))
    batched = run_variant(args, "rrhf", args.prompts_per_step)
    results.append((f"RRHFTrainer, {args.prompts_per_step} prompts/step", batched))
    print(f"{'variant':<58} {'prompts/s':>10} {'x speed':>8} {'peak MiB':>9} {'x memory':>9}")
    for name, result in results:
        speed = result["prompts_per_second"] / baseline["prompts_per_second"]
        memory = result["peak_bytes"] / baseline["peak_bytes"]
        print(
            f"{name:<58} {result['prompts_per_second']:>10.2f} {speed:>8.2f} "
            f"{result['peak_bytes'] / 2**20:>9.0f} {memory:>9.2f}"
        )


if __name__ == "__main__":
    main()

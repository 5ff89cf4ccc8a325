"""Benchmark: West-of-N pairs per second, batched pipeline vs a naive loop, and the time spent outside generation.

Both are measured in the same run, on the same randomly initialized Llama models (built locally, no download):

- batched: `WestOfNGenerator` as users run it (all `n` samples of a group of prompts in one `generate` call,
  length-bucketed reward-model scoring under `torch.inference_mode`, selection, log-likelihoods of the pair, JSONL
  shards written as it goes);
- naive: one prompt and one sample at a time, each sample scored alone.

It prints pairs/second for both and their ratio (target >= 5x), and the share of the batched pipeline's time spent
outside generation: scoring + selection + log-likelihoods (target <= 15%), plus the same share of the whole
`generate()` call including disk writes. The reward model has the policy's architecture unless `--rm_layers` /
`--rm_hidden` say otherwise.

    python benchmarks/west_of_n.py                      # about 2 minutes on 2 CPU cores
    python benchmarks/west_of_n.py --device cuda --prompts 64 --n 16 --max_new_tokens 256 --hidden 1024 --layers 8

`--prefill` instead compares `WestOfNGenerator` with and without `share_prompt_prefill` (each prompt pushed through
the policy and the reward model once for its N responses, or N times) in the same run, on prompts of exactly
`--prompt_tokens` tokens: pairs/s and the seconds spent in generation and in reward-model scoring, medians of
`--repeats` alternating runs, and their ratios (target >= 2x pairs/s at P=256, N=16, R=64, the defaults of this mode):

    python benchmarks/west_of_n.py --prefill            # about 5 minutes on 2 CPU cores
"""

import argparse
import math
import os
import random
import statistics
import tempfile
import time


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from trl_won.data_utils import as_completion  # noqa: E402
from trl_won.generation import SamplingParams, sample_completions  # noqa: E402
from trl_won.rewards import RewardModelScorer  # noqa: E402
from trl_won.tiny import TOY_PROMPTS, build_tiny_causal_lm, build_tiny_reward_model, build_tiny_tokenizer  # noqa: E402
from trl_won.west_of_n import WestOfNConfig, WestOfNGenerator  # noqa: E402
from trl_won.west_of_n.preference import select_from_scores  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16, help="Prompts for the batched pipeline.")
    parser.add_argument("--naive_prompts", type=int, default=4, help="Prompts for the (slow) naive loop.")
    parser.add_argument("--n", type=int, default=8, help="Samples per prompt.")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256, help="Hidden size of the policy.")
    parser.add_argument("--layers", type=int, default=4, help="Layers of the policy.")
    parser.add_argument("--rm_hidden", type=int, default=None, help="Hidden size of the reward model (policy's).")
    parser.add_argument("--rm_layers", type=int, default=None, help="Layers of the reward model (policy's).")
    parser.add_argument("--generation_batch_size", type=int, default=64)
    parser.add_argument("--scoring_batch_size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--prefill", action="store_true", help="Compare share_prompt_prefill off/on instead of batched vs naive."
    )
    parser.add_argument("--prompt_tokens", type=int, default=256, help="--prefill: tokens per prompt (P).")
    parser.add_argument("--repeats", type=int, default=3, help="--prefill: runs of each path (medians reported).")
    args = parser.parse_args()
    if args.prefill:  # this mode's defaults: P=256, N=16, R=64, 8 prompts
        defaults = {"prompts": 16, "n": 8, "max_new_tokens": 64}
        wanted = {"prompts": 8, "n": 16, "max_new_tokens": 64}
        for name, value in wanted.items():
            if getattr(args, name) == defaults[name]:
                setattr(args, name, value)
    return args


def naive_loop(policy, tokenizer, scorer, prompts, n, params, device):
    """One prompt, one sample at a time, each sample scored alone (log-likelihoods recorded while sampling, as in the
    batched pipeline)."""
    pairs = 0
    for index, prompt in enumerate(prompts):
        samples = [
            sample_completions(
                policy, tokenizer, [prompt], 1, params, batch_size=1, seed=index * n + k, return_logprobs=True
            )[0][0]
            for k in range(n)
        ]
        scores = [scorer([prompt], [as_completion(prompt, s.text)])[0] for s in samples]
        selection = select_from_scores(scores, "west_of_n")
        if not selection.is_pair:
            continue
        logps = [sum(samples[i].logprobs) / len(samples[i].logprobs) for i in (selection.chosen, selection.rejected)]
        pairs += all(math.isfinite(x) for x in logps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return pairs


def prompts_of_length(tokenizer, count: int, length: int, seed: int = 0) -> list[str]:
    """`count` distinct texts that the tokenizer encodes (with special tokens) into exactly `length` tokens."""
    rng = random.Random(seed)
    words = [w for w in tokenizer.get_vocab() if w.isalpha()]
    special = len(tokenizer("a")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"])
    prompts = []
    while len(prompts) < count:
        text = " ".join(rng.choice(words) for _ in range(2 * length))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: length - special]
        text = tokenizer.decode(ids)
        if len(tokenizer(text)["input_ids"]) == length:
            prompts.append(text)
    return prompts


def prefill_comparison(args, policy, scorer, tokenizer, root):
    """Pairs/s and generation seconds of `WestOfNGenerator` with `share_prompt_prefill` off and on, alternating."""
    prompts = prompts_of_length(tokenizer, args.prompts, args.prompt_tokens)
    rates = {False: [], True: []}
    generation = {False: [], True: []}
    scoring = {False: [], True: []}
    for repeat in range(args.repeats):
        for share in (False, True):
            config = WestOfNConfig(
                n=args.n,
                max_new_tokens=args.max_new_tokens,
                generation_batch_size=args.generation_batch_size,
                scoring_batch_size=args.scoring_batch_size,
                pairs_dir=f"{root}/pairs-{share}-{repeat}",
                show_progress=False,
                share_prompt_prefill=share,
            )
            generator = WestOfNGenerator(policy, config, reward_model=scorer.model, processing_class=tokenizer)
            start = time.perf_counter()
            pairs = generator.generate(prompts)
            seconds = time.perf_counter() - start
            rates[share].append(len(pairs) / seconds)
            generation[share].append(generator.pipeline.timings.seconds["generation"])
            scoring[share].append(generator.pipeline.timings.seconds["scoring"])
            stages = ", ".join(f"{k} {v:.1f}" for k, v in generator.pipeline.timings.seconds.items())
            print(
                f"  run {repeat + 1}, share_prompt_prefill={share}: {len(pairs)} pairs in {seconds:.1f} s ({stages})"
            )
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    gen_off, gen_on = statistics.median(generation[False]), statistics.median(generation[True])
    print(
        f"P={args.prompt_tokens}, N={args.n}, R={args.max_new_tokens}, {args.prompts} prompts, medians of "
        f"{args.repeats} runs:"
    )
    print(f"  pairs/s: unshared {off:.3f}, shared {on:.3f}, ratio {on / off:.2f}x (target >= 2x)")
    print(f"  generation seconds: unshared {gen_off:.2f}, shared {gen_on:.2f}, ratio {gen_off / gen_on:.2f}x")
    score_off, score_on = statistics.median(scoring[False]), statistics.median(scoring[True])
    print(f"  scoring seconds: unshared {score_off:.2f}, shared {score_on:.2f}, ratio {score_off / score_on:.2f}x")


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    params = SamplingParams(temperature=0.7, max_new_tokens=args.max_new_tokens)
    with tempfile.TemporaryDirectory() as root:
        tokenizer = build_tiny_tokenizer(f"{root}/tokenizer")
        policy_path = build_tiny_causal_lm(
            f"{root}/policy", tokenizer, hidden_size=args.hidden, num_layers=args.layers, num_attention_heads=8
        )
        rm_path = build_tiny_reward_model(
            f"{root}/rm",
            tokenizer,
            hidden_size=args.rm_hidden or args.hidden,
            num_layers=args.rm_layers or args.layers,
            num_attention_heads=8,
        )
        prompts = [TOY_PROMPTS[i % len(TOY_PROMPTS)] + f" (variant {i})" for i in range(args.prompts)]
        policy = AutoModelForCausalLM.from_pretrained(policy_path).to(device)
        scorer = RewardModelScorer(rm_path, tokenizer, batch_size=args.scoring_batch_size)
        scorer.model.to(device)
        policy_params = sum(p.numel() for p in policy.parameters()) / 1e6
        rm_params = sum(p.numel() for p in scorer.model.parameters()) / 1e6
        print(
            f"policy {policy_params:.1f}M params, reward model {rm_params:.1f}M params, n={args.n}, "
            f"max_new_tokens={args.max_new_tokens}, {args.threads} thread(s), device {device}"
        )
        sample_completions(policy, tokenizer, prompts[:2], 2, SamplingParams(max_new_tokens=4))  # warm-up
        if args.prefill:
            print(f"load average: {os.getloadavg()[0]:.2f}, {os.getloadavg()[1]:.2f}, {os.getloadavg()[2]:.2f}")
            prefill_comparison(args, policy, scorer, tokenizer, root)
            return

        config = WestOfNConfig(
            n=args.n,
            max_new_tokens=args.max_new_tokens,
            generation_batch_size=args.generation_batch_size,
            scoring_batch_size=args.scoring_batch_size,
            pairs_dir=f"{root}/pairs",
            show_progress=False,
        )
        generator = WestOfNGenerator(policy, config, reward_model=scorer.model, processing_class=tokenizer)
        start = time.perf_counter()
        pairs = generator.generate(prompts)
        batched_seconds = time.perf_counter() - start
        stages = dict(generator.pipeline.timings.seconds)

        start = time.perf_counter()
        naive_pairs = naive_loop(policy, tokenizer, scorer, prompts[: args.naive_prompts], args.n, params, device)
        naive_seconds = time.perf_counter() - start

    batched_rate = len(pairs) / batched_seconds
    naive_rate = naive_pairs / naive_seconds
    pipeline_total = sum(stages.values())
    outside = pipeline_total - stages["generation"]
    print(f"batched: {len(pairs)} pairs in {batched_seconds:.2f} s = {batched_rate:.3f} pairs/s")
    print(f"naive:   {naive_pairs} pairs in {naive_seconds:.2f} s = {naive_rate:.3f} pairs/s")
    print(f"speed-up: {batched_rate / naive_rate:.1f}x (target >= 5x)")
    print(
        "batched stage seconds: "
        + ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in stages.items())
        + f", other (disk, gathering) {batched_seconds - pipeline_total:.2f}"
    )
    whole = (batched_seconds - stages["generation"]) / batched_seconds
    share = outside / pipeline_total
    print(f"share outside generation (scoring, selection, log-likelihoods): {share:.1%} (target <= 15%)")
    print(f"share outside generation, whole generate() call: {whole:.1%}")


if __name__ == "__main__":
    main()

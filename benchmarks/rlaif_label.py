"""Labels per second of the RLAIF judges against naive loops, measured in the same run.

1. Local judge: `TransformersJudge.judge_pairs` (both orders of a pair in one left-padded, length-sorted batch,
   LM head on the answer position only) against a naive loop that sends one pair in one order at a time through
   the model and reads the last position of the full logits. Same model, same prompts; the two give the same
   probabilities (checked).
2. HTTP judge: `OpenAIJudge` with 32 requests in flight against the same judge sending one request at a time, both
   to a local OpenAI-compatible server (another process) that answers every request after a fixed latency. Each
   repeat times the two back to back; the speedup is the median of the repeats' ratios. The sequential judge labels
   fewer pairs (`--sequential_pairs`): its rate is steady from the first requests, while the concurrent judge needs
   many rounds of 32 requests for a steady rate.

The local judge is a randomly initialized Llama with a real-size vocabulary; the default (hidden 512, 4 layers,
vocabulary 32000) runs on a laptop CPU in about a minute. On a GPU, pass a larger model (e.g. `--hidden_size 2048
--num_layers 16 --vocab_size 151936 --pairs 256`).

```bash
python benchmarks/rlaif_label.py
python benchmarks/rlaif_label.py --hidden_size 2048 --num_layers 16 --vocab_size 151936 --pairs 256 --batch_size 64
```
"""

import argparse
import json
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden_size", type=int, default=512)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--pairs", type=int, default=24, help="Pairs labeled by the local judges.")
    parser.add_argument("--batch_size", type=int, default=32, help="Sequences per forward pass (batched judge).")
    parser.add_argument("--http_pairs", type=int, default=128, help="Pairs labeled by the concurrent HTTP judge.")
    parser.add_argument(
        "--sequential_pairs", type=int, default=16, help="Pairs labeled by the sequential HTTP judge (the baseline)."
    )
    parser.add_argument("--latency", type=float, default=0.05, help="Seconds the server takes per request.")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--repeats", type=int, default=5, help="Timed runs of each HTTP judge, paired (medians reported)."
    )
    parser.add_argument("--skip_local", action="store_true")
    parser.add_argument("--skip_http", action="store_true")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------------- local judge


def local_pairs(n: int):
    from trl_won.tiny import TOY_COMPLETIONS, TOY_PROMPTS

    prompts, a, b = [], [], []
    for i in range(n):
        k = i % len(TOY_PROMPTS)
        completions = TOY_COMPLETIONS[k]
        # Vary the lengths so that batches need padding, as real data does.
        prompts.append(TOY_PROMPTS[k] + " Please answer carefully." * (i % 5))
        a.append(completions[0] + " It is so." * (i % 3))
        b.append(completions[1 % len(completions)] + " Indeed." * (i % 4))
    return prompts, a, b


def naive_labels(model, tokenizer, judge, prompts, a, b) -> list[float]:
    """One pair, one order, one forward pass at a time; full logits; softmax over the two answer tokens."""
    one, two = (seq[0] for seq in judge.answer_tokens.sequences)
    probabilities = []
    with torch.inference_mode():
        for prompt, x, y in zip(prompts, a, b, strict=True):
            orders = []
            for request in judge.prompts_for(prompt, x, y):
                text = judge.lm.render(request, judge.template.prefill())
                ids = torch.tensor([tokenizer(text)["input_ids"]], device=model.device)
                logits = model(input_ids=ids).logits[0, -1]
                orders.append(torch.softmax(logits[[one, two]].float(), dim=0)[0].item())
            probabilities.append((orders[0] + (1 - orders[1])) / 2)
    return probabilities


def bench_local(args) -> dict:
    from transformers import LlamaForCausalLM

    from trl_won.rlaif import TransformersJudge
    from trl_won.tiny import build_tiny_models, tiny_llama_config

    paths = build_tiny_models(os.path.join(tempfile.gettempdir(), "trl_won_tiny"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer)
    torch.manual_seed(0)
    config = tiny_llama_config(
        tokenizer,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        vocab_size=args.vocab_size,
        intermediate_size=args.hidden_size * 8 // 3,
        num_attention_heads=max(1, args.hidden_size // 64),
        num_key_value_heads=max(1, args.hidden_size // 256),
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = LlamaForCausalLM(config).to(device).eval()
    if device == "cuda":
        model = model.to(torch.bfloat16)
    judge = TransformersJudge(model, tokenizer, batch_size=args.batch_size, name="benchmark-judge")
    prompts, a, b = local_pairs(args.pairs)
    lengths = [
        len(tokenizer(judge.lm.render(r, "Preferred Response="))["input_ids"])
        for r in judge.prompts_for(prompts[0], a[0], b[0])
    ]

    judge.judge_pairs(prompts[:2], a[:2], b[:2])  # warm-up
    naive_labels(model, tokenizer, judge, prompts[:2], a[:2], b[:2])

    start = time.perf_counter()
    naive = naive_labels(model, tokenizer, judge, prompts, a, b)
    naive_seconds = time.perf_counter() - start
    start = time.perf_counter()
    batched = [j.probability for j in judge.judge_pairs(prompts, a, b)]
    batched_seconds = time.perf_counter() - start
    return {
        "device": device,
        "model": f"Llama hidden={args.hidden_size} layers={args.num_layers} vocab={args.vocab_size} "
        f"({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters)",
        "prompt_tokens_example": lengths[0],
        "pairs": args.pairs,
        "naive_labels_per_s": args.pairs / naive_seconds,
        "batched_labels_per_s": args.pairs / batched_seconds,
        "speedup": naive_seconds / batched_seconds,
        "max_abs_difference": max(abs(x - y) for x, y in zip(naive, batched, strict=True)),
        "shared_prefix_tokens": judge.lm.last_shared_prefix_length,
        "batch_size": args.batch_size,
    }


# ---------------------------------------------------------------------------------------------------- HTTP judge


def serve(latency: float, port_queue) -> None:
    body = {
        "id": "bench",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "1"},
                "logprobs": {
                    "content": [
                        {
                            "token": "1",
                            "logprob": math.log(0.7),
                            "top_logprobs": [
                                {"token": "1", "logprob": math.log(0.7)},
                                {"token": "2", "logprob": math.log(0.3)},
                            ],
                        }
                    ]
                },
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 1},
    }
    payload = json.dumps(body).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK stall

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            time.sleep(latency)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    class Server(ThreadingHTTPServer):
        request_queue_size = 256
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.serve_forever()


def bench_http(args) -> dict:
    from trl_won.rlaif import OpenAIJudge

    context = multiprocessing.get_context("spawn")
    port_queue = context.Queue()
    server = context.Process(target=serve, args=(args.latency, port_queue), daemon=True)
    server.start()
    try:
        base_url = f"http://127.0.0.1:{port_queue.get(timeout=60)}/v1"
        prompts = [f"Question {i}?" for i in range(args.http_pairs)]
        a = [f"Answer A{i}." for i in range(args.http_pairs)]
        b = [f"Answer B{i}." for i in range(args.http_pairs)]
        pairs = {"sequential": args.sequential_pairs, "concurrent": args.http_pairs}
        judges = {
            "sequential": OpenAIJudge("bench", base_url=base_url, max_concurrency=1, api_key_env=None),
            "concurrent": OpenAIJudge("bench", base_url=base_url, max_concurrency=args.concurrency, api_key_env=None),
        }
        for name, judge in judges.items():  # warm-up: connections (all of them), imports
            n = min(pairs[name], args.concurrency)
            judge.judge_pairs(prompts[:n], a[:n], b[:n])
        seconds = {name: [] for name in judges}
        cpu = {name: [] for name in judges}
        # Each repeat times both judges back to back: the ratio of a repeat compares the two under the same load.
        for _ in range(args.repeats):
            for name, judge in judges.items():
                n = pairs[name]
                start, start_cpu = time.perf_counter(), time.process_time()
                judgements = judge.judge_pairs(prompts[:n], a[:n], b[:n])
                seconds[name].append((time.perf_counter() - start) / n)
                cpu[name].append((time.process_time() - start_cpu) / (2 * n))
                assert all(j.probability is not None for j in judgements)
    finally:
        server.terminate()
        server.join()
    median = statistics.median
    ratios = [s / c for s, c in zip(seconds["sequential"], seconds["concurrent"], strict=True)]
    return {
        "pairs": args.http_pairs,
        "sequential_pairs": args.sequential_pairs,
        "requests": 2 * args.http_pairs,
        "latency_s": args.latency,
        "sequential_labels_per_s": 1 / median(seconds["sequential"]),
        "sequential_ms_per_request": 1000 * median(seconds["sequential"]) / 2,
        f"{args.concurrency}_in_flight_labels_per_s": 1 / median(seconds["concurrent"]),
        "speedup": median(ratios),
        "speedups": ratios,
        "client_cpu_ms_per_request": 1000 * median(cpu["concurrent"]),
    }


def main(argv=None):
    args = parse_args(argv)
    report = {}
    if not args.skip_local:
        report["local_judge"] = local = bench_local(args)
        print(
            f"Local judge on {local['device']}, {local['model']}, ~{local['prompt_tokens_example']} tokens per prompt "
            f"({local['shared_prefix_tokens']} shared by all prompts), batch size {local['batch_size']}:"
            f"\n  naive (one pair, one order per forward): {local['naive_labels_per_s']:.2f} labels/s"
            f"\n  batched two-order judge_pairs:            {local['batched_labels_per_s']:.2f} labels/s"
            f"\n  speedup {local['speedup']:.1f}x (target >= 8x); max |p_naive - p_batched| = "
            f"{local['max_abs_difference']:.1e}"
        )
    if not args.skip_http:
        report["http_judge"] = http = bench_http(args)
        concurrent = http[f"{args.concurrency}_in_flight_labels_per_s"]
        print(
            f"HTTP judge, server latency {http['latency_s'] * 1000:.0f} ms, 2 requests per label:"
            f"\n  sequential requests: {http['sequential_labels_per_s']:.1f} labels/s "
            f"({http['sequential_ms_per_request']:.1f} ms per request, {2 * http['sequential_pairs']} requests)"
            f"\n  {args.concurrency} in flight:        {concurrent:.1f} labels/s ({http['requests']} requests)"
            f"\n  speedup {http['speedup']:.1f}x (median of {args.repeats} paired runs; target >= 20x); "
            f"client CPU per request {http['client_cpu_ms_per_request']:.2f} ms"
        )
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

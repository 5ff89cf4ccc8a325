"""Prompts per second of online RRHF (`RRHFTrainer` on a prompt-only dataset) against TRL's `GRPOTrainer`.

Both trainers get the same model (a randomly initialised Qwen2-shaped causal LM, built from its config and saved once,
loaded by each run from the same path), the same prompts, `num_generations`, completion length, reward function and
sampler (transformers `generate`, temperature 1, no top-k/top-p). Completions all have exactly `--completion_length`
tokens (`min_new_tokens` = `max_completion_length`: no early EOS), so both train on the same number of tokens. Each
trainer trains on the same number of prompts per optimizer step (RRHF counts `per_device_train_batch_size` in prompts,
GRPO in completions) with a fresh generation every step and GRPO's defaults otherwise (`beta=0`: no reference model;
one iteration per generation: no old log-probabilities).

A run is `--steps` optimizer steps of a fresh trainer; its speed is measured between the end of the first step and
the end of the last (wall time between `on_step_end` events, so generation, scoring and training are all in it). The
runs alternate (RRHF, GRPO, RRHF, ...), `--repeats` each, and the medians are compared. The split of a step's time:
generation (RRHF: its sampler; GRPO: `_generate`), scoring (the reward calls), and the rest (the training forward and
backward, the optimizer, logging), per measured step.

```bash
python benchmarks/rrhf_online.py                      # both shapes: short prompts (P~16) and P=256, R=32, k=4
python benchmarks/rrhf_online.py --shape long --repeats 5
```
"""

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
# name: (prompt length in tokens, completion length)
SHAPES = {"short": (16, 32), "long": (256, 32)}
WORDS = (
    "the quick brown fox jumps over the lazy dog a cat sat on the mat and looked at the sun summarize the following "
    "text in one sentence how do I bake bread mix flour water salt and yeast then let the dough rise what is the "
    "capital of France Paris is the capital write a short poem about the sea tell me a story about a robot"
).split()


def reward_chars(completions, **kwargs):
    """The reward of both trainers: a cheap function of the text (number of distinct characters)."""
    return [float(len(set(c if isinstance(c, str) else c[-1]["content"]))) for c in completions]


def build_model(directory: Path, hidden: int, layers: int) -> tuple[str, object]:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(REPO / "tests/fixtures/tokenizers/qwen2")
    config = Qwen2Config(
        vocab_size=-(-len(tokenizer) // 64) * 64,
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory), tokenizer


def make_prompts(tokenizer, num_prompts: int, length: int) -> list[str]:
    """`num_prompts` different texts of about `length` tokens."""
    prompts = []
    for i in range(num_prompts):
        words = [WORDS[(i * 7 + j * (i + 3)) % len(WORDS)] for j in range(length * 2)]
        ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:length]
        prompts.append(tokenizer.decode(ids))
    return prompts


class StepClock:
    """A callback recording the wall time at every `on_step_end`, and the phase timers' totals at the first one."""

    def __init__(self, phases: dict):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.ends.append(time.perf_counter())
                if len(clock.ends) == 1:
                    clock.phases_at_first = dict(clock.phases)

        self.ends: list[float] = []
        self.phases = phases
        self.phases_at_first: dict = {}
        self.callback = Callback()


def timed(phases: dict, name: str, func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def common_args(output_dir: str, steps: int, completion_length: int) -> dict:
    return dict(
        output_dir=output_dir,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        activation_checkpointing=False,
        max_steps=steps,
        learning_rate=1e-6,
        seed=0,
        num_generations=4,
        max_completion_length=completion_length,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        generation_kwargs={"min_new_tokens": completion_length},
    )


def run_rrhf(model_path, dataset, steps, prompts_per_step, completion_length, work) -> dict:
    import trl_won.rrhf.online as online
    from trl_won import RRHFConfig, RRHFTrainer

    phases: dict = {}
    clock = StepClock(phases)
    args = RRHFConfig(
        **common_args(work, steps, completion_length), per_device_train_batch_size=prompts_per_step, max_length=None
    )
    original = online.rewards_per_function
    online.rewards_per_function = timed(phases, "scoring", original)
    try:
        trainer = RRHFTrainer(model_path, args=args, train_dataset=dataset, reward_funcs=reward_chars)
        trainer._sample = timed(phases, "generation", trainer._sample)
        trainer.add_callback(clock.callback)
        trainer.train()
    finally:
        online.rewards_per_function = original
    return summarize(clock, steps, prompts_per_step, trainer)


def run_grpo(model_path, dataset, steps, prompts_per_step, completion_length, work) -> dict:
    from trl import GRPOConfig, GRPOTrainer

    phases: dict = {}
    clock = StepClock(phases)
    args = GRPOConfig(**common_args(work, steps, completion_length), per_device_train_batch_size=prompts_per_step * 4)
    trainer = GRPOTrainer(model_path, reward_funcs=reward_chars, args=args, train_dataset=dataset)
    trainer._generate = timed(phases, "generation", trainer._generate)
    trainer._calculate_rewards = timed(phases, "scoring", trainer._calculate_rewards)
    trainer.add_callback(clock.callback)
    trainer.train()
    return summarize(clock, steps, prompts_per_step, trainer)


def summarize(clock: StepClock, steps: int, prompts_per_step: int, trainer) -> dict:
    if len(clock.ends) != steps:
        raise RuntimeError(f"expected {steps} steps, timed {len(clock.ends)}")
    measured = steps - 1
    seconds = clock.ends[-1] - clock.ends[0]
    split = {name: (clock.phases.get(name, 0.0) - clock.phases_at_first.get(name, 0.0)) / measured
             for name in ("generation", "scoring")}  # fmt: skip
    split["training and rest"] = seconds / measured - sum(split.values())
    lengths = [e["completions/mean_length"] for e in trainer.state.log_history if "completions/mean_length" in e]
    return {
        "prompts_per_s": prompts_per_step * measured / seconds,
        "step_s": seconds / measured,
        "split_s": split,
        "completion_length": statistics.mean(lengths) if lengths else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--prompts_per_step", type=int, default=4)
    parser.add_argument("--hidden_size", type=int, default=512)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's; 1 is steadier on a busy machine)"
    )
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")

    import torch
    from datasets import Dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load before: {os.getloadavg()}; torch threads {torch.get_num_threads()}", flush=True)
    shapes = list(SHAPES) if args.shape == "both" else [args.shape]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_path, tokenizer = build_model(Path(tmp) / "model", args.hidden_size, args.num_layers)
        print(f"model: Qwen2-shaped, hidden {args.hidden_size}, {args.num_layers} layers, vocabulary "
              f"{-(-len(tokenizer) // 64) * 64} (reduced Qwen2 tokenizer), k=4, {args.prompts_per_step} prompts/step",
              flush=True)  # fmt: skip
        for shape in shapes:
            prompt_length, completion_length = SHAPES[shape]
            prompts = make_prompts(tokenizer, args.prompts_per_step * args.steps, prompt_length)
            mean_prompt = statistics.mean(len(tokenizer(p)["input_ids"]) for p in prompts)
            dataset = Dataset.from_dict({"prompt": prompts})
            runs = {"rrhf": [], "grpo": []}
            for repeat in range(args.repeats):
                for name, run in (("rrhf", run_rrhf), ("grpo", run_grpo)):
                    out = str(Path(tmp) / f"{shape}-{name}-{repeat}")
                    result = run(model_path, dataset, args.steps, args.prompts_per_step, completion_length, out)
                    runs[name].append(result)
                    print(f"[{shape}] {name} run {repeat + 1}: {result['prompts_per_s']:.3f} prompts/s, split "
                          f"{ {k: round(v, 3) for k, v in result['split_s'].items()} }", flush=True)  # fmt: skip
            medians = {}
            for name, values in runs.items():
                speeds = [r["prompts_per_s"] for r in values]
                median_run = sorted(values, key=lambda r: r["prompts_per_s"])[len(values) // 2]
                medians[name] = {
                    "prompts_per_s": statistics.median(speeds),
                    "runs": [round(s, 3) for s in speeds],
                    "split_s": {k: round(v, 3) for k, v in median_run["split_s"].items()},
                    "completion_length": median_run["completion_length"],
                }
            ratio = medians["rrhf"]["prompts_per_s"] / medians["grpo"]["prompts_per_s"]
            results[shape] = {"prompt_tokens": mean_prompt, "completion_tokens": completion_length, **medians,
                              "rrhf_over_grpo": ratio}  # fmt: skip
    print(f"load after: {os.getloadavg()}", flush=True)

    print("\n| shape | trainer | prompts/s (median) | runs | x GRPO | generation s/step | scoring s/step | "
          "training and rest s/step |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for result in results.values():
        label = f"P={result['prompt_tokens']:.0f}, R={result['completion_tokens']}"
        for name in ("rrhf", "grpo"):
            r = result[name]
            ratio = f"{result['rrhf_over_grpo']:.2f}" if name == "rrhf" else "1.00"
            gen, score, rest = (r["split_s"][key] for key in ("generation", "scoring", "training and rest"))
            print(f"| {label} | {name.upper()} | {r['prompts_per_s']:.3f} | {r['runs']} | {ratio} | "
                  f"{gen:.3f} | {score:.3f} | {rest:.3f} |")  # fmt: skip
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

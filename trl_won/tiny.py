"""Tiny, fully offline models, tokenizer and datasets for tests, examples and smoke runs.

Everything here is built locally in seconds (no model hub access): a byte-level BPE tokenizer trained with the
`tokenizers` library and given a chat template, a tiny Llama causal LM and a tiny Llama sequence-classification reward
model (`num_labels=1`). They are saved with `save_pretrained` so that the real loading code
(`from_pretrained(path)`) is what loads them back.

Run `python -m trl_won.tiny DIR` to write them to `DIR/{tokenizer,policy,reward_model}`.
"""

import argparse
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch


SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>"]

# A chat template whose rendering of a prompt with `add_generation_prompt=True` is a prefix of the rendering of the
# prompt followed by the assistant's answer, and which ends every assistant turn with the EOS token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}<|eos|>{% else %}{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = """
The quick brown fox jumps over the lazy dog. A cat sat on the mat and looked at the sun.
Summarize the following text in one sentence. The summary should be short, accurate and complete.
Which response is better? Response 1 is helpful. Response 2 is harmful. Preferred Response=1
Consider the coherence, accuracy, coverage, and overall quality of each response and explain which one is better.
Rationale: the first answer is clear and correct, the second one is vague. SCORE: 7 out of 10.
Write a short poem about the sea. Tell me a story about a robot who learns to paint.
How do I bake bread? Mix flour, water, salt and yeast, then let the dough rise and bake it for an hour.
What is the capital of France? Paris is the capital of France. Berlin is the capital of Germany.
I am sorry, I cannot help with that request. Here is a helpful and honest answer to your question.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000. Letters: a b c d e f g h i j k l m n o p q r s t u v w x y z.
"""


@dataclass
class TinyModelPaths:
    """Local directories written by [`build_tiny_models`]."""

    tokenizer: str
    policy: str
    reward_model: str


def build_tiny_tokenizer(output_dir: str | os.PathLike, vocab_size: int = 600):
    """Train a byte-level BPE tokenizer with a chat template and save it with `save_pretrained`.

    Args:
        output_dir (`str` or `os.PathLike`):
            Directory to save the tokenizer to.
        vocab_size (`int`, *optional*, defaults to `600`):
            Size of the BPE vocabulary, special tokens included.

    Returns:
        [`~transformers.PreTrainedTokenizerFast`]: The tokenizer, loaded back from `output_dir`.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    lines = [line for line in _CORPUS.splitlines() if line.strip()]
    return train_chat_tokenizer(tokenizer, lines * 20, vocab_size, output_dir)


def train_chat_tokenizer(tokenizer, texts: Iterable[str], vocab_size: int, output_dir: str | os.PathLike):
    """Train a byte-level BPE `tokenizers.Tokenizer` (its normalizer and pre-tokenizer already set) on `texts`, give it
    the package's special tokens and chat template, save it with `save_pretrained` and load it back."""
    from tokenizers import decoders, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(output_dir)
    return AutoTokenizer.from_pretrained(output_dir)


def tiny_llama_config(tokenizer, hidden_size: int = 64, num_layers: int = 2, **overrides):
    """A `LlamaConfig` small enough to train on a laptop CPU in seconds, matched to `tokenizer`'s special tokens."""
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def build_tiny_causal_lm(output_dir: str | os.PathLike, tokenizer, seed: int = 0, **config_overrides) -> str:
    """Save a randomly initialized tiny `LlamaForCausalLM` (and `tokenizer`) to `output_dir` and return the path."""
    from transformers import GenerationConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, **config_overrides))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return str(output_dir)


def build_tiny_reward_model(output_dir: str | os.PathLike, tokenizer, seed: int = 1, **config_overrides) -> str:
    """Save a randomly initialized tiny `LlamaForSequenceClassification` with `num_labels=1` to `output_dir`."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_labels=1, **config_overrides))
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return str(output_dir)


def build_tiny_models(output_dir: str | os.PathLike) -> TinyModelPaths:
    """Build the tokenizer, a policy and a reward model under `output_dir`; reuse them if already there."""
    root = Path(output_dir)
    paths = TinyModelPaths(
        tokenizer=str(root / "tokenizer"), policy=str(root / "policy"), reward_model=str(root / "reward_model")
    )
    if all((Path(p) / "config.json").exists() for p in (paths.policy, paths.reward_model)):
        return paths
    tokenizer = build_tiny_tokenizer(paths.tokenizer)
    build_tiny_causal_lm(paths.policy, tokenizer)
    build_tiny_reward_model(paths.reward_model, tokenizer)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Toy datasets, in TRL's standard (plain text) and conversational (list of messages) formats.
# ---------------------------------------------------------------------------------------------------------------

TOY_PROMPTS = [
    "Summarize: the cat sat on the mat.",
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "How do I bake bread?",
    "Tell me a story about a robot.",
    "Which number is larger, 7 or 12?",
    "Say something helpful.",
    "Describe the quick brown fox.",
]

TOY_COMPLETIONS = [
    [" A cat sat on a mat.", " The cat.", " Dogs are loud and the sun is hot today."],
    [" Paris.", " Paris is the capital of France.", " Berlin.", " I cannot help with that."],
    [" The sea is blue and deep.", " Waves."],
    [" Mix flour, water, salt and yeast, then bake.", " Buy it.", " Bread is food."],
    [" A robot learns to paint the sun.", " Robots.", " Once upon a time a robot sat on a mat."],
    [" 12 is larger.", " 7.", " Both are numbers."],
    [" Here is a helpful and honest answer.", " No."],
    [" The quick brown fox jumps over the lazy dog.", " A fox.", " It is brown.", " Quick."],
]

TOY_REWARDS = [
    [1.0, 0.2, -1.0],
    [0.5, 1.0, -1.0, -0.5],
    [1.0, 0.0],
    [1.0, -0.5, 0.1],
    [1.0, -0.2, 0.4],
    [1.0, -1.0, 0.0],
    [1.0, -1.0],
    [1.0, 0.1, 0.3, -0.3],
]


def _as_user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def _as_assistant(completion: str) -> list[dict]:
    return [{"role": "assistant", "content": completion.strip()}]


def toy_prompt_dataset(conversational: bool = False):
    """Prompt-only rows: `{"prompt"}`."""
    from datasets import Dataset

    prompts = [_as_user(p) if conversational else p for p in TOY_PROMPTS]
    return Dataset.from_dict({"prompt": prompts})


def toy_ranking_dataset(conversational: bool = False, with_rewards: bool = True):
    """Rows `{"prompt", "completions", "rewards"}` with 2 to 4 completions per prompt (the RRHF format)."""
    from datasets import Dataset

    data = {"prompt": [], "completions": []}
    for prompt, completions in zip(TOY_PROMPTS, TOY_COMPLETIONS, strict=True):
        data["prompt"].append(_as_user(prompt) if conversational else prompt)
        data["completions"].append([_as_assistant(c) if conversational else c for c in completions])
    if with_rewards:
        data["rewards"] = [list(r) for r in TOY_REWARDS]
    return Dataset.from_dict(data)


def toy_preference_dataset(conversational: bool = False):
    """Rows `{"prompt", "chosen", "rejected"}`: each prompt's best and worst toy completion."""
    from datasets import Dataset

    data = {"prompt": [], "chosen": [], "rejected": []}
    for prompt, completions, rewards in zip(TOY_PROMPTS, TOY_COMPLETIONS, TOY_REWARDS, strict=True):
        best = completions[max(range(len(rewards)), key=rewards.__getitem__)]
        worst = completions[min(range(len(rewards)), key=rewards.__getitem__)]
        data["prompt"].append(_as_user(prompt) if conversational else prompt)
        data["chosen"].append(_as_assistant(best) if conversational else best)
        data["rejected"].append(_as_assistant(worst) if conversational else worst)
    return Dataset.from_dict(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="Where to write tokenizer/, policy/ and reward_model/.")
    args = parser.parse_args(argv)
    paths = build_tiny_models(args.output_dir)
    print(f"tokenizer: {paths.tokenizer}\npolicy: {paths.policy}\nreward model: {paths.reward_model}")


if __name__ == "__main__":
    main()

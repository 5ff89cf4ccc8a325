"""A byte-level BPE tokenizer trained on the world's own text, with the package's chat template.

Line breaks are pre-tokens of their own (spaces around them are dropped) and every other segment gets a prefix
space, so a word is the same token wherever it appears: in the instruction (`Avoid: dog.`), at the start of an
answer (`<|assistant|>dog cat`), after a line break in a judge prompt (`Response 1:\ndog cat`) and in a decoded
sample that kept its leading space. That keeps the matching a reward model or judge has to learn (a response word
against an instruction word) a matter of equal token ids. Digits are their own pre-tokens, so the judge's answers
`1` and `2` after `Preferred Response=` are single tokens.
"""

import os
from collections.abc import Iterable

from ..tiny import train_chat_tokenizer


def build_world_tokenizer(texts: Iterable[str], output_dir: str | os.PathLike, vocab_size: int = 1024):
    """Train a byte-level BPE tokenizer on `texts`, give it the chat template, and save it with `save_pretrained`.

    Args:
        texts (`Iterable[str]`):
            Training text (instructions, responses, judge prompts).
        output_dir (`str` or `os.PathLike`):
            Where to save it.
        vocab_size (`int`, *optional*, defaults to `1024`):
            Vocabulary size, special tokens included.

    Returns:
        [`~transformers.PreTrainedTokenizerFast`]: The tokenizer, loaded back from `output_dir`.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Replace(Regex(r"[ \t]*\n[ \t]*"), "\n")
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\n+"), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=True)]
    )
    tokenizer = train_chat_tokenizer(tokenizer, texts, vocab_size, output_dir)
    for answer in ("1", "2"):
        ids = tokenizer("Preferred Response=" + answer, add_special_tokens=False)["input_ids"]
        if tokenizer.decode(ids[-1:]) != answer:
            raise RuntimeError(
                f"The world tokenizer does not end 'Preferred Response={answer}' with the token {answer!r}."
            )
    return tokenizer

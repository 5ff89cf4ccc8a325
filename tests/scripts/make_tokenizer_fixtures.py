"""Build the reduced real-tokenizer fixtures in `tests/fixtures/tokenizers/` from the full ones in `../shared`.

Each fixture keeps its family's pre-tokenizer, normalizer, post-processor, decoder, special tokens, model options
(byte fallback, unk) and chat template, and a vocabulary cut down to what the test corpus needs:

- every token that is a contiguous piece of a pre-tokenized corpus word, plus every base symbol (the 256 byte-level
  characters, or the 256 `<0xXX>` byte-fallback tokens), plus the special tokens;
- every merge whose two parts and result are all kept.

BPE only ever merges adjacent pieces of a word, so on the corpus words both the full and the reduced merge lists offer
the same candidate merges at every step, with the same relative ranks: the corpus tokenizes to the same token strings
(checked by `tests/test_real_tokenizers.py` whenever `../shared` is present). Other text still tokenizes, into
shorter pieces. Ids are renumbered densely, in the original order.

Usage: `python tests/scripts/make_tokenizer_fixtures.py [--shared ../shared]` from the repository root.
"""

import argparse
import json
import shutil
from pathlib import Path

from tokenizers import Tokenizer


FAMILIES = ("qwen2", "llama-spm", "gpt-2")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizers"
CORPUS = FIXTURES / "corpus.json"


def build_corpus() -> list[str]:
    """Texts the real-tokenizer tests tokenize: toy data, judge prompts in both orders, answers."""
    from trl_won.rlaif.templates import PRESETS, format_completion, format_context
    from trl_won.tiny import TOY_COMPLETIONS, TOY_PROMPTS

    texts = list(TOY_PROMPTS)
    for prompt, completions in zip(TOY_PROMPTS, TOY_COMPLETIONS, strict=True):
        texts += [prompt + c for c in completions] + [c.strip() for c in completions]
        for template in PRESETS.values():
            for chain_of_thought in (False, True):
                for a, b in ((completions[0], completions[1]), (completions[1], completions[0])):
                    request = template.request(format_context(prompt), format_completion(a), format_completion(b))
                    if chain_of_thought:
                        request = template.request(
                            format_context(prompt), format_completion(a), format_completion(b), True
                        )
                    texts.append(f"{request}\n\n{template.prefill(chain_of_thought)}")
    texts += ["1", "2", " 1", " 2", "=1", "=2", "You are a helpful assistant", "user", "assistant", "system", "\n"]
    return sorted(set(texts))


def _pieces(word: str) -> set[str]:
    return {word[i:j] for i in range(len(word)) for j in range(i + 1, len(word) + 1)}


def reduce_tokenizer(source: Path, target: Path, corpus: list[str]) -> None:
    data = json.loads((source / "tokenizer.json").read_text())
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    model = data["model"]
    assert model["type"] == "BPE", model["type"]
    vocab: dict[str, int] = model["vocab"]
    special = {t["content"] for t in data["added_tokens"] if not t["content"].startswith("[PAD")}
    wanted = set(special)
    pre_tokenizer = tokenizer.pre_tokenizer
    for text in corpus:
        words = [w for w, _ in pre_tokenizer.pre_tokenize_str(text)] if pre_tokenizer else [text]
        for word in words:
            wanted |= _pieces(word) & vocab.keys()
    if model.get("byte_fallback"):
        wanted |= {f"<0x{b:02X}>" for b in range(256)} & vocab.keys()
    else:  # byte-level: the 256 single characters that stand for bytes
        wanted |= {token for token in vocab if len(token) == 1}
    kept = sorted(wanted & vocab.keys(), key=vocab.__getitem__)
    new_ids = {token: i for i, token in enumerate(kept)}
    merges = []
    for merge in model["merges"]:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        if left in new_ids and right in new_ids and left + right in new_ids:
            merges.append([left, right])
    model["vocab"], model["merges"] = new_ids, merges
    added = []
    next_id = len(new_ids)
    for token in data["added_tokens"]:
        if token["content"] not in special:
            continue
        if token["content"] in new_ids:
            token["id"] = new_ids[token["content"]]
        else:
            token["id"], next_id = next_id, next_id + 1
        added.append(token)
    data["added_tokens"] = added
    post = data.get("post_processor") or {}
    added_ids = {token["content"]: token["id"] for token in added}
    for entry in (post.get("special_tokens") or {}).values():
        entry["ids"] = [new_ids.get(t, added_ids.get(t)) for t in entry["tokens"]]
    target.mkdir(parents=True, exist_ok=True)
    (target / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)
    print(f"{target.name}: {len(vocab)} -> {len(new_ids)} tokens, {len(merges)} merges, {len(added)} added tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2].parent / "shared"))
    args = parser.parse_args()
    corpus = build_corpus()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    CORPUS.write_text(json.dumps(corpus, ensure_ascii=False, indent=0) + "\n")
    for family in FAMILIES:
        reduce_tokenizer(Path(args.shared) / "tokenizers" / family, FIXTURES / family, corpus)


if __name__ == "__main__":
    main()

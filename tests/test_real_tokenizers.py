"""RRHF, the local judge and West-of-N over three real tokenizer families, each paired with a tiny random model.

The families (see `../shared/tokenizers/README.md`): Qwen2 byte-level BPE with a chat template that adds a default
system prompt and BOS = EOS = PAD; Llama-2 SentencePiece, which adds BOS, has no pad token, puts spaces inside tokens
and encodes "1" alone as ["▁", "1"]; GPT-2 byte-level BPE with no pad token and no chat template.

Every test runs on the reduced fixtures committed in `tests/fixtures/tokenizers/` (built by
`tests/scripts/make_tokenizer_fixtures.py`; they tokenize the test texts exactly like the full tokenizers), and again
on the full tokenizers when `../shared/tokenizers` is present (`TRL_WON_SHARED_DIR` overrides where `shared` is).
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import cpu_training_kwargs
from trl_won.data_utils import tokenize_prompt_completion
from trl_won.generation import prompt_ids_for_generation, sample_completions
from trl_won.rlaif import TransformersJudge
from trl_won.rlaif.templates import HELPFULNESS, format_completion, format_context
from trl_won.rrhf import RRHFConfig, RRHFTrainer
from trl_won.rrhf.online import sampling_params
from trl_won.tiny import TOY_COMPLETIONS, TOY_PROMPTS, build_tiny_causal_lm, toy_prompt_dataset, toy_ranking_dataset
from trl_won.utils import derived_seed
from trl_won.west_of_n import WestOfNConfig, WestOfNGenerator


REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "tokenizers"
SHARED = Path(os.environ.get("TRL_WON_SHARED_DIR", REPO.parent / "shared")) / "tokenizers"
FAMILIES = ["qwen2", "llama-spm", "gpt-2"]
CASES = [(family, source) for source in ("fixture", "full") for family in FAMILIES]
_MODELS: dict = {}


def tokenizer_path(family: str, source: str) -> Path:
    if source == "fixture":
        return FIXTURES / family
    path = SHARED / family
    if not (path / "tokenizer.json").exists():
        pytest.skip(f"the full tokenizer {path} is absent (it lives in ../shared/tokenizers; set TRL_WON_SHARED_DIR)")
    return path


@pytest.fixture(params=CASES, ids=[f"{family}-{source}" for family, source in CASES])
def real(request, tmp_path_factory):
    """`(family, tokenizer, model_path)`: a real tokenizer and a tiny random Llama with `vocab_size=len(tokenizer)`."""
    family, source = request.param
    path = tokenizer_path(family, source)
    if request.param not in _MODELS:
        tokenizer = AutoTokenizer.from_pretrained(path)
        directory = tmp_path_factory.mktemp(f"{family}-{source}")
        _MODELS[request.param] = build_tiny_causal_lm(directory, tokenizer, hidden_size=16, num_layers=1)
    return family, AutoTokenizer.from_pretrained(path), _MODELS[request.param]


def test_fixtures_tokenize_the_corpus_like_the_full_tokenizers():
    corpus = json.loads((FIXTURES / "corpus.json").read_text())
    for family in FAMILIES:
        full = AutoTokenizer.from_pretrained(tokenizer_path(family, "full"))
        reduced = AutoTokenizer.from_pretrained(FIXTURES / family)
        for text in corpus:
            tokens = full.convert_ids_to_tokens(full(text)["input_ids"])
            assert reduced.convert_ids_to_tokens(reduced(text)["input_ids"]) == tokens, (family, text)
        for name in ("bos_token", "eos_token", "pad_token", "unk_token", "chat_template"):
            assert getattr(reduced, name) == getattr(full, name), (family, name)


def test_fixture_traits(real):
    """The traits each family is here for."""
    family, tokenizer, _ = real
    if family == "llama-spm":
        assert tokenizer.pad_token is None and tokenizer("1")["input_ids"][0] == tokenizer.bos_token_id
        assert tokenizer.convert_ids_to_tokens(tokenizer("1", add_special_tokens=False)["input_ids"]) == ["▁", "1"]
    if family == "gpt-2":
        assert tokenizer.pad_token is None and tokenizer.chat_template is None
        assert len(tokenizer(" 1")["input_ids"]) == 1
    if family == "qwen2":
        assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.pad_token
        assert "You are a helpful assistant" in tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}], tokenize=False
        )


def _check_standard(tokenizer, prompt, completion):
    prompt_ids, completion_ids = tokenize_prompt_completion(tokenizer, prompt, completion)
    assert prompt_ids == tokenizer(prompt)["input_ids"]  # the prompt as it is tokenized alone (BOS included)
    ids = prompt_ids + completion_ids
    assert completion_ids[-1] == tokenizer.eos_token_id and completion_ids.count(tokenizer.eos_token_id) == 1
    if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.eos_token_id:
        assert ids.count(tokenizer.bos_token_id) == (1 if ids[0] == tokenizer.bos_token_id else 0)
    assert tokenizer.decode(ids, skip_special_tokens=True) == prompt + completion


def test_rrhf_tokenization(real):
    family, tokenizer, _ = real
    for prompt, completions in zip(TOY_PROMPTS, TOY_COMPLETIONS, strict=True):
        for completion in completions:
            _check_standard(tokenizer, prompt, completion)
    if tokenizer.chat_template is None:
        return
    for question, completion in (("Hi", "Hello!"), ("2+2?", "4")):
        prompt = {"role": "user", "content": question}
        messages = [prompt, {"role": "assistant", "content": completion}]
        prompt_ids, completion_ids = tokenize_prompt_completion(tokenizer, [prompt], messages[1:])
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        assert tokenizer.decode(prompt_ids + completion_ids) == rendered
        assert tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")
        assert "You are a helpful assistant" in tokenizer.decode(prompt_ids)  # the template's default system prompt
        assert tokenizer.decode(completion_ids) == f"{completion}<|im_end|>\n"


def _naive_rrhf_loss(model, tokenizer, dataset):
    losses = []
    for example in dataset:
        p, nll = [], []
        for completion in example["completions"]:
            prompt_ids, completion_ids = tokenize_prompt_completion(tokenizer, example["prompt"], completion)
            ids = torch.tensor([prompt_ids + completion_ids])
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            token_logps = [logps[t - 1, ids[0, t]] for t in range(len(prompt_ids), ids.shape[1])]
            p.append(sum(token_logps) / len(token_logps))
            nll.append(-sum(token_logps) / len(token_logps))
        r = example["rewards"]
        rank = sum(max(0.0, p[i] - p[j]) for i in range(len(r)) for j in range(len(r)) if r[i] < r[j])
        best = max(range(len(r)), key=lambda i: (r[i], -i))
        losses.append(rank + nll[best])
    return float(sum(losses) / len(losses))


def test_rrhf_training_step(real, tmp_path):
    family, tokenizer, model_path = real
    dataset = toy_ranking_dataset(conversational=tokenizer.chat_template is not None).select(range(4))
    model = AutoModelForCausalLM.from_pretrained(model_path)
    with torch.no_grad():
        expected = _naive_rrhf_loss(model, tokenizer, dataset)
    args = RRHFConfig(
        **cpu_training_kwargs(tmp_path / "out", per_device_train_batch_size=4, max_steps=1, learning_rate=1e-2)
    )
    trainer = RRHFTrainer(model_path, args=args, train_dataset=dataset, processing_class=tokenizer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(expected, rel=1e-5)
    assert all(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_online_rrhf_step(real, tmp_path):
    """Online RRHF over the real tokenizers (Qwen2 through its chat template): the candidates are those of
    `sample_completions` for the round's seed, and the step's loss is the RRHF loss computed by hand on them, each
    prompt tokenized as the sampler renders it and followed by the sampled ids."""
    family, tokenizer, model_path = real
    dataset = toy_prompt_dataset(conversational=tokenizer.chat_template is not None).select(range(2))
    calls = []

    def length_reward(prompts, completions, completion_ids, **kwargs):
        calls.append((prompts, completion_ids))
        return [len(ids) + 0.01 * (sum(ids) % 89) for ids in completion_ids]

    settings = dict(per_device_train_batch_size=2, max_steps=1, learning_rate=1e-2, seed=1)
    settings.update(num_generations=3, max_completion_length=6, temperature=1.5)
    args = RRHFConfig(**cpu_training_kwargs(tmp_path / "out", **settings))
    trainer = RRHFTrainer(
        model_path, args=args, train_dataset=dataset, processing_class=tokenizer, reward_funcs=length_reward
    )
    model = AutoModelForCausalLM.from_pretrained(model_path)
    trainer.train()

    prompts, completion_ids = calls[0]
    unique = prompts[::3]
    reference = sample_completions(
        model, tokenizer, unique, 3, sampling_params(args), batch_size=6, seed=derived_seed(1, 0, 0), share_prompt=True
    )
    assert completion_ids == [sample.token_ids for samples in reference for sample in samples]
    assert len({tuple(ids) for ids in completion_ids}) > 1
    losses = []
    with torch.no_grad():
        for group, prompt in enumerate(unique):
            prompt_ids = prompt_ids_for_generation(tokenizer, prompt)
            p, rewards = [], []
            for ids in completion_ids[3 * group : 3 * group + 3]:
                full = torch.tensor([prompt_ids + ids])
                logps = torch.log_softmax(model(input_ids=full).logits[0].float(), dim=-1)
                token_logps = [logps[t - 1, full[0, t]].item() for t in range(len(prompt_ids), full.shape[1])]
                p.append(sum(token_logps) / len(token_logps))
                rewards.append(len(ids) + 0.01 * (sum(ids) % 89))
            rank = sum(max(0.0, p[i] - p[j]) for i in range(3) for j in range(3) if rewards[i] < rewards[j])
            best = max(range(3), key=lambda i: (rewards[i], -i))
            losses.append(rank - p[best])
    assert trainer.state.log_history[0]["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def _manual_first_probability(model, tokenizer, request, use_chat_template):
    """P("1") / (P("1") + P("2")) after the rendered request, from one unpadded forward per answer."""
    prefill = HELPFULNESS.prefill()
    if use_chat_template:
        messages = [{"role": "user", "content": request}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefill
    else:
        text = f"{request}\n\n{prefill}"
    add_special_tokens = not use_chat_template  # the rendered template holds its own special tokens
    prompt_ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    log_masses = []
    for answer in ("1", "2"):
        ids = tokenizer(text + answer, add_special_tokens=add_special_tokens)["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids
        with torch.no_grad():
            logps = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        log_masses.append(sum(logps[t - 1, ids[t]].item() for t in range(len(prompt_ids), len(ids))))
    return 1.0 / (1.0 + math.exp(log_masses[1] - log_masses[0]))


@pytest.mark.parametrize("use_chat_template", [False, True])
def test_judge_probability_matches_manual_computation(real, use_chat_template):
    family, tokenizer, model_path = real
    model = AutoModelForCausalLM.from_pretrained(model_path)
    if use_chat_template and tokenizer.chat_template is None:
        with pytest.raises(ValueError, match="no chat template"):
            TransformersJudge(model, tokenizer, use_chat_template=True)
        return
    judge = TransformersJudge(model, tokenizer, template="helpfulness", use_chat_template=use_chat_template)
    prompts, a, b = TOY_PROMPTS[:3], [c[0] for c in TOY_COMPLETIONS[:3]], [c[1] for c in TOY_COMPLETIONS[:3]]
    probabilities = judge(prompts, a, b)
    for prompt, first, second, probability in zip(prompts, a, b, probabilities, strict=True):
        context, x, y = format_context(prompt), format_completion(first), format_completion(second)
        a_first = _manual_first_probability(model, tokenizer, HELPFULNESS.request(context, x, y), use_chat_template)
        a_second = 1 - _manual_first_probability(
            model, tokenizer, HELPFULNESS.request(context, y, x), use_chat_template
        )
        assert probability == pytest.approx((a_first + a_second) / 2, abs=1e-5)


def test_west_of_n_generation(real, tmp_path):
    """Sampled responses come back as exactly the text that follows the prompt (leading space included, SentencePiece
    too), and a conversational response stops where the chat template ends the assistant's turn (Qwen's
    `<|im_end|>`), although the model's generation config only knows `<|endoftext|>`."""
    family, tokenizer, model_path = real
    model = AutoModelForCausalLM.from_pretrained(model_path)
    conversational = tokenizer.chat_template is not None
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>") if conversational else tokenizer.eos_token_id
    assert stop != model.generation_config.eos_token_id or not conversational
    # Steer sampling: one of two word tokens (" Paris", " France"), then the end of the turn.
    words, bias = {}, {}
    for word in ("Paris", "France"):
        token = tokenizer(f"The capital is {word}", add_special_tokens=False)["input_ids"][-1]
        assert tokenizer.convert_ids_to_tokens(token) in (f"▁{word}", f"Ġ{word}")  # one token, space included
        words[word] = token
        bias[(token,)], bias[(token, stop)] = 30.0, 60.0
    model.generation_config.sequence_bias = bias
    prompts = [[{"role": "user", "content": p}] if conversational else p for p in TOY_PROMPTS[:3]]
    args = WestOfNConfig(
        n=4, max_new_tokens=4, pairs_dir=str(tmp_path / "pairs"), keep_candidates=True, show_progress=False
    )
    lengths = lambda prompts, completions, **kwargs: [float(len(str(c))) for c in completions]  # noqa: E731
    pairs = WestOfNGenerator(model, args, reward_funcs=lengths, processing_class=tokenizer).generate(prompts)
    assert len(pairs) > 0
    for row in pairs:
        texts = [c[0]["content"] if conversational else c for c in row["completions"]]
        assert set(texts) == {" Paris", " France"}, texts
        chosen = row["chosen"][0]["content"] if conversational else row["chosen"]
        assert chosen == " France"  # the longer one, by the reward function

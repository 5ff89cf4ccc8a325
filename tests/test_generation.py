import inspect

import pytest
import torch

from trl_won.generation import SamplingParams, sample_completions


def test_samples_per_prompt_and_formats(policy, tokenizer):
    prompts = ["Hello", [{"role": "user", "content": "Hi"}]]
    results = sample_completions(
        policy, tokenizer, prompts[:1], num_samples=3, params=SamplingParams(max_new_tokens=5)
    )
    assert len(results) == 1 and len(results[0]) == 3
    for sample in results[0]:
        assert 1 <= len(sample.token_ids) <= 5
        assert sample.finished == (sample.token_ids[-1] == tokenizer.eos_token_id)
        assert sample.text == tokenizer.decode(sample.token_ids, skip_special_tokens=True)
    conversational = sample_completions(policy, tokenizer, prompts[1:], 2, SamplingParams(max_new_tokens=4))
    assert len(conversational[0]) == 2


def test_seed_reproduces_and_leaves_global_rng_alone(policy, tokenizer):
    prompts = ["Hello", "What is"]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = sample_completions(policy, tokenizer, prompts, 4, SamplingParams(temperature=1.0, max_new_tokens=6), seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    c = sample_completions(policy, tokenizer, prompts, 4, SamplingParams(temperature=1.0, max_new_tokens=6), seed=7)
    assert [[s.token_ids for s in row] for row in a] == [[s.token_ids for s in row] for row in c]
    distinct = {tuple(s.token_ids) for s in a[0]}
    assert len(distinct) > 1  # temperature 1 over a random model gives different samples


def test_greedy_is_deterministic_and_training_mode_restored(policy, tokenizer):
    policy.train()
    params = SamplingParams(temperature=0, max_new_tokens=5)
    a = sample_completions(policy, tokenizer, ["Hello"], 2, params)
    assert a[0][0].token_ids == a[0][1].token_ids
    assert policy.training


def test_bad_sampling_params():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)


def test_sampled_token_logprobs_equal_a_teacher_forced_pass(policy, tokenizer):
    prompts = ["Hello", "What is the capital of France?"]
    params = SamplingParams(temperature=0.7, top_k=20, max_new_tokens=6)
    results = sample_completions(policy, tokenizer, prompts, 3, params, seed=3, return_logprobs=True)
    for prompt, samples in zip(prompts, results):
        prompt_ids = tokenizer(prompt)["input_ids"]
        for sample in samples:
            assert len(sample.logprobs) == len(sample.token_ids)
            ids = torch.tensor([prompt_ids + sample.token_ids])
            with torch.no_grad():  # the model's own log-probabilities, not the temperature/top-k warped ones
                logps = torch.log_softmax(policy(ids).logits[0, :-1].float(), dim=-1)
            expected = logps[torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1), torch.tensor(sample.token_ids)]
            assert sample.logprobs == pytest.approx(expected.tolist(), abs=1e-4)
    assert sample_completions(policy, tokenizer, prompts[:1], 1, params)[0][0].logprobs is None


def test_extra_generate_kwargs_reach_generate(policy, tokenizer):
    params = SamplingParams(temperature=1.0, max_new_tokens=4)
    extra = {"min_new_tokens": 4}
    results = sample_completions(policy, tokenizer, ["Hello"], 8, params, seed=0, generate_kwargs=extra)
    assert [len(s.token_ids) for s in results[0]] == [4] * 8  # no sample may stop before 4 tokens


# Prefilling each prompt once (`share_prompt=True`): equal to the unshared path, and the prompt really goes once.

MIXED_LENGTHS = ["Hello", "A", "What is the capital of France? Tell me more about it, please.", "How do I bake?"]


def _ids(results):
    return [[s.token_ids for s in row] for row in results]


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_shared_prefill_gives_the_samples_of_the_unshared_path(policy, tokenizer, temperature):
    # Prompts of different lengths: left padding, a one-token prompt whose prefilled part is all padding; a batch size
    # that splits the prompts over several generate calls.
    params = SamplingParams(temperature=temperature, top_k=50, max_new_tokens=8)
    kwargs = dict(params=params, batch_size=12, seed=11, return_logprobs=True)
    unshared = sample_completions(policy, tokenizer, MIXED_LENGTHS, 4, **kwargs)
    shared = sample_completions(policy, tokenizer, MIXED_LENGTHS, 4, share_prompt=True, **kwargs)
    assert _ids(shared) == _ids(unshared)
    assert [[s.text for s in row] for row in shared] == [[s.text for s in row] for row in unshared]
    for row_a, row_b in zip(shared, unshared, strict=True):
        for a, b in zip(row_a, row_b, strict=True):
            assert a.finished == b.finished
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    if temperature:
        assert len({tuple(s.token_ids) for row in shared for s in row}) > 8  # really sampled
    # run to run, the shared path is reproducible for a seed
    assert _ids(sample_completions(policy, tokenizer, MIXED_LENGTHS, 4, share_prompt=True, **kwargs)) == _ids(shared)


def test_shared_prefill_under_a_patched_forward_gives_the_samples_of_the_plain_model(policy, tokenizer):
    """RRHFTrainer patches the forward (`add_logprob_forward`: `**kwargs`, no `position_ids` in its signature), so
    `generate` does not derive positions from the mask by itself. The shared path must still continue the prefilled
    cache at the positions the prefill used: before the fix, every left-padded prompt's samples were garbage."""
    import copy

    from trl_won.logprobs import add_logprob_forward

    patched = add_logprob_forward(copy.deepcopy(policy))
    assert "position_ids" not in inspect.signature(patched.forward).parameters
    params = SamplingParams(temperature=1.0, top_k=50, max_new_tokens=8)
    kwargs = dict(params=params, batch_size=16, seed=11)
    plain = sample_completions(policy, tokenizer, MIXED_LENGTHS, 4, **kwargs)
    assert _ids(sample_completions(patched, tokenizer, MIXED_LENGTHS, 4, share_prompt=True, **kwargs)) == _ids(plain)


def test_shared_prefill_logprobs_equal_a_teacher_forced_pass(policy, tokenizer):
    params = SamplingParams(temperature=0.9, max_new_tokens=6)
    results = sample_completions(
        policy, tokenizer, MIXED_LENGTHS, 3, params, seed=5, return_logprobs=True, share_prompt=True
    )
    for prompt, samples in zip(MIXED_LENGTHS, results, strict=True):
        prompt_ids = tokenizer(prompt)["input_ids"]
        for sample in samples:
            ids = torch.tensor([prompt_ids + sample.token_ids])
            with torch.no_grad():
                logps = torch.log_softmax(policy(ids).logits[0, :-1].float(), dim=-1)
            expected = logps[torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1), torch.tensor(sample.token_ids)]
            assert sample.logprobs == pytest.approx(expected.tolist(), abs=1e-4)


def _embedding_calls(model, run):
    """The `(batch, tokens)` shapes that go through the model's input embeddings while `run()` runs."""
    shapes = []
    handle = model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: shapes.append(tuple(args[0].shape))
    )
    try:
        run()
    finally:
        handle.remove()
    return shapes


def test_shared_prefill_pushes_each_prompt_through_once(policy, tokenizer):
    prompts = MIXED_LENGTHS[2:]  # one generate call: 2 prompts x 8 samples
    width = tokenizer(prompts, padding=True, return_tensors="pt")["input_ids"].shape[1]
    params = SamplingParams(temperature=1.0, max_new_tokens=3)
    unshared = _embedding_calls(policy, lambda: sample_completions(policy, tokenizer, prompts, 8, params, seed=0))
    shared = _embedding_calls(
        policy, lambda: sample_completions(policy, tokenizer, prompts, 8, params, seed=0, share_prompt=True)
    )
    assert unshared[0] == (16, width)  # today: every sample prefills its prompt
    assert shared[:2] == [(2, width - 1), (16, 1)]  # once per prompt, then the last prompt token per sample
    assert shared[2:] == unshared[1:]  # decoding is unchanged


def test_shared_prefill_with_lora_and_a_sliding_window_model(tiny_paths, tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, MistralConfig

    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_paths.policy), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    torch.manual_seed(1)
    # a window of 4 tokens, shorter than the prompts: the repeated cache keeps only the window
    sliding = AutoModelForCausalLM.from_config(
        MistralConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=4,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    params = SamplingParams(temperature=1.0, max_new_tokens=8)
    for model in (lora, sliding):
        unshared = sample_completions(model, tokenizer, MIXED_LENGTHS, 4, params, seed=2, return_logprobs=True)
        shared = sample_completions(
            model, tokenizer, MIXED_LENGTHS, 4, params, seed=2, return_logprobs=True, share_prompt=True
        )
        assert _ids(shared) == _ids(unshared)


def test_recurrent_models_fall_back_to_the_unshared_path_with_a_warning(tokenizer, caplog):
    from transformers import AutoModelForCausalLM, MambaConfig

    torch.manual_seed(0)
    mamba = AutoModelForCausalLM.from_config(
        MambaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            state_size=4,
            num_hidden_layers=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    params = SamplingParams(temperature=1.0, max_new_tokens=4)
    unshared = sample_completions(mamba, tokenizer, MIXED_LENGTHS[:2], 3, params, seed=0)
    with caplog.at_level("WARNING", logger="trl_won.generation"):
        shared = sample_completions(mamba, tokenizer, MIXED_LENGTHS[:2], 3, params, seed=0, share_prompt=True)
    assert "MambaForCausalLM has recurrent" in caplog.text
    assert _ids(shared) == _ids(unshared)


@pytest.mark.parametrize("conversational", [False, True])
def test_reward_model_scores_with_a_shared_prompt_equal_the_unshared_scores(tiny_paths, conversational):
    from trl_won.rewards import RewardModelScorer

    prompts = [p if not conversational else [{"role": "user", "content": p}] for p in MIXED_LENGTHS]
    texts = ["", "Paris.", "Paris is the capital of France, a country in Europe.", "Bake it", "A"]

    def wrap(text):
        return [{"role": "assistant", "content": text}] if conversational else text

    flat_prompts = [p for p in prompts for _ in texts]
    flat_completions = [wrap(t) for _ in prompts for t in texts]
    shared = RewardModelScorer(tiny_paths.reward_model, batch_size=3, share_prompt=True)
    unshared = RewardModelScorer(tiny_paths.reward_model, batch_size=3)
    assert shared.share_prompt
    sequences = shared.tokenize(flat_prompts, flat_completions)
    # the tokens a prompt's sequences share go through the model once, then only the rest of each sequence
    shapes = _embedding_calls(shared.model, lambda: shared(flat_prompts, flat_completions))
    prefill = [shape for shape in shapes if shape[0] == 1]
    # (standard "A" with the empty completion shares a single token with the others: that group is scored unshared)
    assert (
        len(prefill) == len(prompts) - (not conversational)
        and sum(shape[1] for shape in shapes) < sum(map(len, sequences)) * 0.7
    )
    expected = unshared(flat_prompts, flat_completions)
    assert shared(flat_prompts, flat_completions) == pytest.approx(expected, abs=1e-5)
    assert len(set(expected)) > len(prompts)  # the scores differ between completions
    one_by_one = [unshared([p], [c])[0] for p, c in zip(flat_prompts, flat_completions, strict=True)]
    assert expected == pytest.approx(one_by_one, abs=1e-5)


_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
# `../shared` next to the checkout (CI), or two levels up for a git worktree under a folder of worktrees
SHARED_TOKENIZERS = next(
    (p / "shared" / "tokenizers" for p in (_ROOT, _ROOT.parent, _ROOT.parent.parent) if (p / "shared").is_dir()),
    _ROOT.parent / "shared" / "tokenizers",
)


@pytest.mark.skipif(not SHARED_TOKENIZERS.is_dir(), reason="needs the real tokenizers in ../shared/tokenizers")
@pytest.mark.parametrize("name", ["qwen2", "llama-spm", "gpt-2"])
def test_shared_prompt_with_real_tokenizers(name):
    """BOS = EOS = PAD (qwen2), an added `<s>` (llama-spm), no chat template (gpt-2); unicode prompts."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig

    from trl_won.rewards import RewardModelScorer

    tokenizer = AutoTokenizer.from_pretrained(SHARED_TOKENIZERS / name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    policy = AutoModelForCausalLM.from_config(LlamaConfig(**config))
    prompts = ["Hello wörld, 日本語 🙂", "A", "What is 1+1? Explain in detail please, step by step."]
    if tokenizer.chat_template:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    params = SamplingParams(temperature=1.0, max_new_tokens=8)
    unshared = sample_completions(policy, tokenizer, prompts, 4, params, seed=0, return_logprobs=True)
    shared = sample_completions(policy, tokenizer, prompts, 4, params, seed=0, return_logprobs=True, share_prompt=True)
    assert _ids(shared) == _ids(unshared)

    reward_model = AutoModelForSequenceClassification.from_config(LlamaConfig(num_labels=1, **config))
    flat_prompts = [p for p in prompts for _ in range(4)]
    completions = [
        [{"role": "assistant", "content": s.text}] if tokenizer.chat_template else s.text
        for row in shared
        for s in row
    ]
    expected = RewardModelScorer(reward_model, tokenizer, batch_size=5)(flat_prompts, completions)
    scores = RewardModelScorer(reward_model, tokenizer, batch_size=5, share_prompt=True)(flat_prompts, completions)
    assert scores == pytest.approx(expected, abs=1e-5)

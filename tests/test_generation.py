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
